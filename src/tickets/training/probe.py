"""Probes of an encoder's representation: weighted kNN and a linear probe on frozen features.

* ``encoder_features(model, x, head=...)``: the representation a probe reads — the model's ``embed(x)`` method
  when it has one, else its ``features(x)`` method, else the input of its head module (captured with a forward
  pre-hook), flattened to ``[N, D]``.
* ``knn_predict(features, bank, bank_labels, ...)``: the weighted k-nearest-neighbour vote of the kNN monitor of
  Wu et al. 2018 (InstDisc, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination"), used by
  MoCo's CIFAR demo and by CV_LTH (Chen et al. 2021, "The Lottery Tickets Hypothesis for Supervised and
  Self-supervised Pre-training in Computer Vision Models") to score tickets: features and bank are L2-normalised,
  the k most cosine-similar bank entries vote for their labels with weight ``exp(similarity / T)``, and the class
  with the largest summed weight wins (ties: the lowest class id). Defaults k = 200 (as the kNN monitors) and
  T = 0.07 (CV_LTH's KNN.py and InstDisc's temperature; MoCo's demo uses 0.1).
* ``linear_probe(train_features, train_labels, eval_features, eval_labels)``: scikit-learn's
  ``LogisticRegression`` (L-BFGS, multinomial) on standardised frozen features.
* ``split_features`` / ``probe_task``: the same over a task's splits, under a mask.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tickets.errors import TicketsError

__all__ = ["KNN_K", "KNN_TEMPERATURE", "encoder_features", "knn_predict", "knn_accuracy", "linear_probe",
           "split_features", "probe_task"]

KNN_K = 200
KNN_TEMPERATURE = 0.07
PROBES = ("knn", "linear")


def encoder_features(model: nn.Module, x: torch.Tensor, *, head: Iterable[str] = ()) -> torch.Tensor:
    """The encoder's representation of images ``x`` (``[N, C, H, W]`` in [0, 1]) as ``[N, D]``.

    Uses ``model.embed(x)`` when the model defines that method, else ``model.features(x)`` when ``features`` is a
    method (not a submodule: torchvision-style ``features`` Sequentials give unpooled maps), else runs the model
    and returns the input of its (first) head module ``head`` (dotted path). TicketsError when none applies."""
    for attr in ("embed", "features"):
        fn = getattr(model, attr, None)
        if callable(fn) and not isinstance(fn, nn.Module):
            return fn(x).flatten(1)
    heads = list(head)
    if not heads:
        raise TicketsError(f"{type(model).__name__} has no embed()/features() method and no head was named: give "
                           "the model an embed(x) method or name its head (ModelSpec.head)")
    try:
        module = model.get_submodule(heads[0])
    except AttributeError:
        raise TicketsError(f"head {heads[0]!r} is not a submodule of {type(model).__name__}: fix ModelSpec.head") \
            from None
    captured: list[torch.Tensor] = []

    def grab(_module: nn.Module, args: tuple) -> None:
        captured.append(args[0])

    handle = module.register_forward_pre_hook(grab)
    try:
        model(x)
    finally:
        handle.remove()
    if not captured or not isinstance(captured[0], torch.Tensor):
        raise TicketsError(f"the head {heads[0]!r} of {type(model).__name__} was not called on a tensor: give the "
                           "model an embed(x) method")
    return captured[0].flatten(1)


@torch.no_grad()
def knn_predict(features: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, *, num_classes: int,
                k: int = KNN_K, temperature: float = KNN_TEMPERATURE, chunk: int = 1024) -> torch.Tensor:
    """Weighted kNN class predictions ``[N]`` (int64) for ``features`` ``[N, D]`` against ``bank`` ``[M, D]``
    with labels ``bank_labels`` ``[M]`` in ``0..num_classes-1``.

    Both sides are L2-normalised here; neighbour j of query i gets weight ``exp(cos(f_i, b_j) / temperature)``
    and adds it to its label's score; the prediction is the highest-scoring class (the InstDisc / CV_LTH kNN
    classifier). ``k`` is clipped to the bank size. Queries are processed ``chunk`` at a time to bound memory.
    TicketsError for an empty bank or mismatched sizes."""
    if bank.shape[0] == 0:
        raise TicketsError("kNN needs a non-empty labelled bank: raise --train-size")
    if bank.shape[0] != bank_labels.shape[0] or features.shape[-1] != bank.shape[-1]:
        raise TicketsError(f"kNN bank of {tuple(bank.shape)} with {tuple(bank_labels.shape)} labels does not fit "
                           f"features {tuple(features.shape)}")
    k = min(int(k), bank.shape[0])
    bank_n = F.normalize(bank.float(), dim=1)
    labels = bank_labels.long().to(bank.device)
    out = []
    for start in range(0, features.shape[0], chunk):
        q = F.normalize(features[start:start + chunk].float(), dim=1)
        sim = q @ bank_n.T  # [n, M] cosine similarities
        top, idx = sim.topk(k, dim=1)
        weights = (top / temperature).exp()
        scores = torch.zeros(q.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
        scores.scatter_add_(1, labels[idx], weights)
        out.append(scores.argmax(dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def knn_accuracy(features: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, *,
                 num_classes: int, k: int = KNN_K, temperature: float = KNN_TEMPERATURE) -> float:
    """Fraction of ``features`` whose ``knn_predict`` equals ``labels`` (NaN for no queries)."""
    if features.shape[0] == 0:
        return float("nan")
    pred = knn_predict(features, bank, bank_labels, num_classes=num_classes, k=k, temperature=temperature)
    return int((pred == labels.to(pred.device)).sum()) / int(features.shape[0])


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, eval_features: torch.Tensor,
                 eval_labels: torch.Tensor, *, c: float = 1.0, max_iter: int = 1000, seed: int = 0) -> float:
    """Accuracy on ``eval_*`` of a logistic regression fitted on frozen ``train_*`` features (``[N, D]``, labels
    ``[N]``): features standardised with the training mean and std (scikit-learn ``StandardScaler``), then
    ``LogisticRegression(C=c, max_iter=max_iter)`` (L-BFGS, multinomial, L2). TicketsError with fewer than two
    training classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_train = train_features.detach().cpu().double().numpy()
    y_train = train_labels.detach().cpu().numpy()
    if len(np.unique(y_train)) < 2:
        raise TicketsError("a linear probe needs at least two classes in the training split: raise --train-size")
    if eval_features.shape[0] == 0:
        return float("nan")
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(x_train), y_train)
    pred = clf.predict(scaler.transform(eval_features.detach().cpu().double().numpy()))
    return float((pred == eval_labels.detach().cpu().numpy()).mean())


@torch.no_grad()
def split_features(model: nn.Module, split, *, device: torch.device | str = "cpu", batch_size: int = 256,
                   head: Iterable[str] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """(features ``[N, D]`` on CPU, labels ``[N]``) of every example of ``split`` (un-augmented, in order), with
    ``model`` in eval mode (its mode is restored afterwards). Batches need ``x`` and ``y``."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for batch in split.batches(batch_size):
            if "x" not in batch or "y" not in batch:
                raise TicketsError("probes need image batches with labels (x, y): use an image classification task")
            feats.append(encoder_features(model, batch["x"].to(device), head=head).float().cpu())
            labels.append(batch["y"].cpu())
    finally:
        model.train(was_training)
    if not feats:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels)


def probe_task(model: nn.Module, task, split: str = "test", *, probe: str = "knn", device: torch.device | str = "cpu",
               batch_size: int = 256, limit: int | None = None, head: Iterable[str] = (), k: int = KNN_K,
               temperature: float = KNN_TEMPERATURE, seed: int = 0) -> dict:
    """Score ``model``'s frozen representation on a labelled image ``task``: the training split is the kNN bank
    (or the probe's training set), ``split`` (first ``limit`` examples) is scored.

    Returns ``{"<probe>_accuracy": …, "examples": n, "bank": m, "probe": …}`` (plus ``k`` and ``temperature`` for
    kNN). The model should already be on ``device`` and under its mask. TicketsError for an unknown probe or a
    task without class labels."""
    if probe not in PROBES:
        raise TicketsError(f"unknown probe {probe!r}: choose knn or linear")
    if getattr(task, "kind", "image") not in ("image", "contrastive"):
        raise TicketsError(f"probes score image encoders, and {task.name!r} is a {task.kind} task: use an image "
                           "classification task (cifar10, mnist, ...)")
    task.split(split)  # TicketsError for an unknown split name
    labelled = getattr(task, "labelled", None)  # contrastive tasks: their un-augmented labelled splits
    bank_split = labelled["train"] if labelled else task.train
    eval_split = (labelled[split] if labelled else task.split(split)).limit(limit)
    bank, bank_y = split_features(model, bank_split, device=device, batch_size=batch_size, head=head)
    feats, y = split_features(model, eval_split, device=device, batch_size=batch_size, head=head)
    num_classes = int(max(int(bank_y.max()) if len(bank_y) else 0, int(y.max()) if len(y) else 0)) + 1
    out: dict = {"probe": probe, "examples": int(len(y)), "bank": int(len(bank_y))}
    if probe == "knn":
        out["knn_accuracy"] = knn_accuracy(feats, y, bank, bank_y, num_classes=num_classes, k=k,
                                           temperature=temperature)
        out.update(k=min(int(k), int(len(bank_y))), temperature=temperature)
    else:
        out["linear_accuracy"] = linear_probe(bank, bank_y, feats, y, seed=seed)
    return out
