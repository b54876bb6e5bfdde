"""Adversarial attacks for adversarial training and robust evaluation: L∞ PGD and FGSM with random start.

Images: the attack works in pixel space [0, 1] (models normalise inside, see ``models.base.Normalize``), so the
budgets are what users think: ``eps``, ``alpha`` are given in /255 units (``eps=8`` means 8/255 per pixel), and
every adversarial image is clamped to [0, 1].

- PGD-k (Madry et al. 2018): uniform random start in the ε-ball, k steps of ``alpha · sign(∇x loss)``, each followed
  by projection onto the ε-ball and onto [0, 1]. The last iterate is returned.
- FGSM-RS (Wong et al. 2020, "fast adversarial training"): uniform random start in the ε-ball, one step of
  ``alpha · sign(∇x loss)``, projection onto the ε-ball and [0, 1].

Text (FreeLB-style, Zhu et al. 2020): the same attacks on the *input word embeddings*. ``eps`` is an L2 radius in
embedding-norm units *per token* (no /255 scaling): each token's embedding moves by at most ``eps``; steps follow
the L2-normalised gradient per token (``alpha · g/‖g‖``), the random start is a uniform direction at a radius drawn
uniformly in [0, eps], and padding positions are never perturbed. A perturbed text batch carries ``inputs_embeds``
instead of ``input_ids`` (``Task.forward`` passes it through).

Default step sizes (``alpha=None``): ε/4 for PGD (2/255 at ε = 8/255) and 1.25·ε for FGSM-RS (Wong et al.); see
``config.default_alpha``. ε = 0 returns the inputs unchanged, so robust accuracy equals clean accuracy exactly.

Model mode while generating the attack:

- adversarial *training* (``training_perturbation``): the model stays in train mode (batch-norm batch statistics,
  dropout on), as in Madry et al. and Wong et al.; batch-norm running statistics are saved before and restored
  after generation, so they only ever see the batches the optimizer steps on;
- *evaluation* attacks (``attack_batch`` inside ``robust_evaluate``): eval mode, like the clean evaluation.

Only gradients with respect to the inputs are computed (``torch.autograd.grad``); parameter ``.grad`` is untouched.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from tickets.config import AdversarialConfig, RobustEvalConfig, resolve_attack
from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.tasks.base import Batch, Task

PIXEL = 1.0 / 255.0
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")

Perturbation = Callable[[nn.Module, Batch], Batch]


# ----------------------------------------------------------------------------------------------------------------
# helpers


def check_attack(attack: str, eps: float, alpha: float | None, steps: int, where: str = "attack") -> float:
    """Validate an attack's settings (TicketsError naming the bad one); return the step size actually used."""
    steps_given = None if attack == "fgsm" else steps  # the functional API ignores steps for FGSM (one step)
    return resolve_attack(RobustEvalConfig(attack=attack, eps=eps, alpha=alpha, steps=steps_given), where).alpha


def _input_embeddings(model: nn.Module) -> nn.Module:
    """The word-embedding module of a text model (transformers model or our HFTextModel wrapper)."""
    for owner in (model, getattr(model, "base", None), getattr(model, "task_model", None)):
        get = getattr(owner, "get_input_embeddings", None)
        if get is not None:
            emb = get()
            if emb is not None:
                return emb
    raise TicketsError(f"{type(model).__name__} has no get_input_embeddings(): text attacks need a transformers "
                       "model")


def _check_task(task: Task) -> None:
    if task.kind not in ("image", "text"):
        raise TicketsError(f"adversarial attacks support image and text classification tasks, not {task.kind!r} "
                           f"task {task.name!r}: drop --adv / --attack / --robust-eval")


def _loss(model: nn.Module, task: Task, batch: Batch) -> torch.Tensor:
    return task.loss(task.forward(model, batch), batch)


def _uniform(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U(-1, 1) noise of ``shape``; drawn on the CPU from ``generator`` when given (device-independent)."""
    if generator is None:
        return torch.rand(shape, device=like.device, dtype=like.dtype) * 2 - 1
    return (torch.rand(shape, generator=generator, dtype=like.dtype) * 2 - 1).to(like.device)


def _normal(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


@contextmanager
def _frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Restore batch-norm running statistics (and counters) after the block: attack passes leave no trace."""
    saved = [(m, {k: v.clone() for k, v in m.named_buffers(recurse=False) if v is not None})
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, bufs in saved:
                for k, v in bufs.items():
                    getattr(m, k).copy_(v)


# ----------------------------------------------------------------------------------------------------------------
# image attacks (pixel space, L∞)


def _image_attack(model: nn.Module, task: Task, batch: Batch, *, eps: float, alpha: float, steps: int,
                  random_start: bool, generator: torch.Generator | None) -> torch.Tensor:
    x = batch["x"].detach()
    e, a = eps * PIXEL, alpha * PIXEL
    if random_start:
        delta = _uniform(x.shape, x, generator) * e
        delta = (x + delta).clamp_(0.0, 1.0) - x
    else:
        delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = _loss(model, task, {**batch, "x": x + delta})
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = (delta + a * grad.sign()).clamp_(-e, e)
            delta = (x + delta).clamp_(0.0, 1.0) - x
    return (x + delta.detach()).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# text attacks (embedding space, per-token L2)


def _project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    norm = delta.norm(dim=-1, keepdim=True)
    return delta * torch.clamp(eps / norm.clamp_min(1e-12), max=1.0)


def _text_delta(model: nn.Module, task: Task, batch: Batch, *, eps: float, alpha: float, steps: int,
                random_start: bool, generator: torch.Generator | None) -> torch.Tensor:
    """The embedding perturbation (N×L×D, zero on padding) found by PGD / FGSM-RS."""
    emb = _input_embeddings(model)
    with torch.no_grad():
        base = emb(batch["input_ids"]).detach()
    keep = batch.get("attention_mask")
    keep = torch.ones(base.shape[:2], device=base.device) if keep is None else keep
    keep = keep.unsqueeze(-1).to(base.dtype)
    rest = {k: v for k, v in batch.items() if k != "input_ids"}
    if random_start:
        direction = _normal(base.shape, base, generator)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        radius = (_uniform(base.shape[:2] + (1,), base, generator) + 1) / 2 * eps
        delta = direction * radius * keep
    else:
        delta = torch.zeros_like(base)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = _loss(model, task, {**rest, "inputs_embeds": base + delta})
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            step = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            delta = _project_l2(delta + alpha * step, eps) * keep
    return delta.detach()


def _text_batch(model: nn.Module, batch: Batch, delta: torch.Tensor) -> Batch:
    """The batch with ``inputs_embeds = embed(input_ids) + delta`` (gradients still reach the embeddings)."""
    out = {k: v for k, v in batch.items() if k != "input_ids"}
    out["inputs_embeds"] = _input_embeddings(model)(batch["input_ids"]) + delta
    return out


# ----------------------------------------------------------------------------------------------------------------
# public API


def attack_batch(
    model: nn.Module,
    task: Task,
    batch: Batch,
    *,
    attack: str = "pgd",
    eps: float = 8.0,
    alpha: float | None = None,
    steps: int = 10,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Batch:
    """An adversarial version of ``batch`` (same keys; text: ``inputs_embeds`` instead of ``input_ids``).

    Runs in whatever mode the model is in; the caller picks train or eval mode. ``eps``/``alpha`` are /255 pixel
    units for images and embedding L2 units for text; ``steps`` is ignored for FGSM (one step). ``generator``
    makes the random start reproducible (else the global RNG is used). ``eps == 0`` returns ``batch`` itself.
    """
    _check_task(task)
    alpha = check_attack(attack, eps, alpha, steps)
    if eps == 0:
        return batch
    k = 1 if attack == "fgsm" else steps
    with torch.enable_grad():
        if task.kind == "image":
            x = _image_attack(model, task, batch, eps=eps, alpha=alpha, steps=k, random_start=random_start,
                              generator=generator)
            return {**batch, "x": x}
        delta = _text_delta(model, task, batch, eps=eps, alpha=alpha, steps=k, random_start=random_start,
                            generator=generator)
    return _text_batch(model, batch, delta)


def _rows(batch: Batch, rows: slice) -> Batch:
    return {k: v[rows] for k, v in batch.items()}


def training_perturbation(adv_cfg: AdversarialConfig, task: Task) -> Perturbation:
    """``perturb(model, batch) -> batch`` for adversarial training (called by ``train.fine_tune`` per batch).

    The first ``round(clean_fraction · N)`` examples of each (already shuffled) batch stay clean; the rest are
    replaced by their PGD-k / FGSM-RS versions, generated in train mode with batch-norm running statistics left
    untouched. Random starts come from the global RNG, which ``fine_tune`` seeds per epoch.
    """
    _check_task(task)
    adv_cfg = resolve_attack(adv_cfg, "train.adversarial")  # validated; alpha filled, FGSM: one step
    alpha = adv_cfg.alpha
    settings = dict(attack=adv_cfg.attack, eps=adv_cfg.eps, alpha=alpha, steps=adv_cfg.steps)

    def perturb(model: nn.Module, batch: Batch) -> Batch:
        n = int(next(iter(batch.values())).shape[0])
        clean = int(round(adv_cfg.clean_fraction * n))
        if clean >= n or adv_cfg.eps == 0:
            return batch
        with _frozen_bn_stats(model):
            if task.kind == "image":
                adv = attack_batch(model, task, _rows(batch, slice(clean, None)), **settings)
                x = adv["x"] if clean == 0 else torch.cat([batch["x"][:clean], adv["x"]])
                return {**batch, "x": x}
            with torch.enable_grad():
                delta = _text_delta(model, task, _rows(batch, slice(clean, None)), eps=adv_cfg.eps, alpha=alpha,
                                    steps=adv_cfg.steps, random_start=True, generator=None)
        if clean:
            delta = torch.cat([torch.zeros_like(delta[:1]).expand(clean, *delta.shape[1:]), delta])
        return _text_batch(model, batch, delta)

    return perturb


def robust_evaluate(
    model: nn.Module,
    task: Task,
    split: str = "test",
    *,
    attack: str = "pgd",
    eps: float = 8.0,
    alpha: float | None = None,
    steps: int = 20,
    device: torch.device | str = "auto",
    batch_size: int = 256,
    limit: int | None = None,
    mask: Mask | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Clean (SA) and robust (RA) score of ``model`` (under ``mask``) on ``split`` in eval mode.

    Returns ``{attack, eps, alpha, steps, examples, metric, clean_accuracy, robust_accuracy, clean, robust}``:
    ``clean_accuracy`` / ``robust_accuracy`` are the task's primary metric on the clean / attacked inputs
    (accuracy for image tasks), ``clean`` / ``robust`` all its metrics. Random starts come from a generator
    seeded with ``seed``, so the figure is reproducible. With ``eps == 0`` robust equals clean exactly.
    """
    from tickets.training.evaluate import _batch_size, eval_batches

    _check_task(task)
    used_alpha = check_attack(attack, eps, alpha, steps)
    gen = torch.Generator().manual_seed(seed)
    clean_metric, robust_metric = task.new_metric(), task.new_metric()
    n = 0
    for batch in eval_batches(model, task, split, device=device, batch_size=batch_size, limit=limit, mask=mask,
                              progress=progress, desc=f"{attack} ε={eps:g} {task.name}/{split}"):
        with torch.no_grad():
            clean_out = task.forward(model, batch)
        clean_metric.update(clean_out, batch)
        if eps == 0:
            robust_metric.update(clean_out, batch)
        else:
            adv = attack_batch(model, task, batch, attack=attack, eps=eps, alpha=used_alpha, steps=steps,
                               generator=gen)
            with torch.no_grad():
                robust_metric.update(task.forward(model, adv), batch)
        n += _batch_size(batch)
    clean, robust = clean_metric.compute(), robust_metric.compute()
    primary = task.primary_metric
    return {
        "attack": attack,
        "eps": eps,
        "alpha": used_alpha,
        "steps": 1 if attack == "fgsm" else steps,
        "units": "1/255 pixel (L-inf)" if task.kind == "image" else "embedding L2 per token",
        "split": split,
        "examples": n,
        "metric": primary,
        "clean_accuracy": clean[primary],
        "robust_accuracy": robust[primary],
        "clean": clean,
        "robust": robust,
    }
