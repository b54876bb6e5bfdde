"""Contrastive objectives (SimCLR, MoCo v2), their augmentations, the kNN / linear probes, and tickets drawn on the
objectives themselves (``find --task simclr/digits``): small-cnn on scikit-learn digits, no files needed."""

import colorsys
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from tickets.config import DataConfig, FindConfig, ScheduleConfig, TrainConfig
from tickets.errors import TicketsError
from tickets.fileio import read_json
from tickets.tasks.base import higher_is_better
from tickets.tasks.contrastive import (ContrastiveOptions, MoCoHead, ProjectionHead, canonical_name, color_jitter,
                                       enqueue_, hsv_to_rgb, load_contrastive_task, moco_logits, momentum_update_,
                                       nt_xent, random_grayscale, random_resized_crop, rgb_to_hsv)
from tickets.training.probe import knn_accuracy, knn_predict, linear_probe
from tickets.verbs.find import find_tickets
from tickets.verbs.prepare import prepare

DATA = DataConfig(train_size=300)
FAST = TrainConfig(epochs=2, batch_size=64, optimizer="sgd", lr=0.05, lr_schedule="cosine")


# ---------------------------------------------------------------------------------------------------------------
# losses and MoCo's updates, against hand computations
# ---------------------------------------------------------------------------------------------------------------
def test_nt_xent_matches_a_hand_computation_on_four_vectors():
    a, b, c, d = (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (-1.0, 2.0)  # pairs (a, c) and (b, d)
    tau = 0.5

    def cos(u, v):
        return (u[0] * v[0] + u[1] * v[1]) / (math.hypot(*u) * math.hypot(*v))

    vecs = [a, b, c, d]
    partner = {0: 2, 1: 3, 2: 0, 3: 1}
    losses = []
    for i, u in enumerate(vecs):
        denom = sum(math.exp(cos(u, v) / tau) for j, v in enumerate(vecs) if j != i)
        losses.append(-math.log(math.exp(cos(u, vecs[partner[i]]) / tau) / denom))
    expected = sum(losses) / 4
    got = nt_xent(torch.tensor([a, b]) * 3.0, torch.tensor([c, d]), tau)  # scale does not matter: normalised
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_moco_logits_momentum_and_queue_values():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    logits = moco_logits(q, k, queue, 0.2)
    assert torch.allclose(logits, torch.tensor([[0.6 / 0.2, 0.0, -1.0 / 0.2]]))
    loss = F.cross_entropy(logits, torch.zeros(1, dtype=torch.long))
    assert loss.item() == pytest.approx(-math.log(math.exp(3.0) / (math.exp(3.0) + 1.0 + math.exp(-5.0))), rel=1e-6)

    key = {"w": torch.tensor([1.0, -2.0])}
    momentum_update_(key, {"w": torch.tensor([3.0, 2.0])}, 0.9)
    assert torch.allclose(key["w"], torch.tensor([0.9 * 1 + 0.1 * 3, 0.9 * -2 + 0.1 * 2]))


@pytest.mark.parametrize("size,ptr,n", [(5, 3, 3), (3, 1, 5), (4, 0, 4), (6, 5, 1)])
def test_enqueue_is_the_one_at_a_time_ring_buffer(size, ptr, n):
    keys = torch.arange(1, n + 1, dtype=torch.float32).unsqueeze(1).repeat(1, 2)
    queue, p = torch.zeros(size, 2), torch.tensor(ptr)
    enqueue_(queue, p, keys)
    ref, rp = torch.zeros(size, 2), ptr
    for row in keys:  # the reference: one key at a time
        ref[rp] = row
        rp = (rp + 1) % size
    assert torch.equal(queue, ref) and int(p) == rp


def test_moco_head_copies_then_moves_the_momentum_encoder_and_enqueues_keys():
    p = prepare("small-cnn", "moco/digits", data=DATA)
    model, task = p.model, p.task
    head = model.head
    assert isinstance(head, MoCoHead) and int(head.key_ready) == 0
    assert int(head.queue.shape[0]) == len(task.train)  # default queue: min(4096, training examples)
    name = "conv1.weight"
    with torch.no_grad():
        model.get_parameter(name).mul_(2.0)  # the model differs from the buffers made at adapt time
    head.momentum_step_(model, 0.9)  # first step: copy, then m·θ + (1 − m)·θ = θ
    keys = head.key_state()
    assert int(head.key_ready) == 1
    own = model.state_dict()
    assert set(keys) == {n for n in own if not n.startswith("head.") or n.split(".")[1] in "02"}
    assert all(torch.allclose(keys[n], own[n], rtol=1e-6, atol=1e-7) for n in keys)
    before = keys[name].clone()
    with torch.no_grad():
        model.get_parameter(name).add_(1.0)
    head.momentum_step_(model, 0.9)
    assert torch.allclose(keys[name], 0.9 * before + 0.1 * (before + 1.0), atol=1e-6)
    # the key encoder is the model with the key tensors, evaluated as a separate copy would be
    ref = copy.deepcopy(model).eval()
    ref.load_state_dict({**ref.state_dict(), **{n: t.clone() for n, t in keys.items()}})
    x = torch.rand(5, 1, 8, 8)
    model.eval()
    assert torch.allclose(head.keys_forward(model, x), ref(x), atol=1e-6)
    # a training forward enqueues the batch's normalised keys at the pointer
    model.train()
    batch = next(iter(task.train.batches(16, augment=True, generator=torch.Generator().manual_seed(1))))
    ptr = int(head.queue_ptr)
    logits = task.forward(model, batch)
    assert logits.shape == (16, 1 + head.queue.shape[0])
    assert int(head.queue_ptr) == (ptr + 16) % head.queue.shape[0]
    assert torch.allclose(head.queue[ptr:ptr + 16].norm(dim=1), torch.ones(16), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# kNN and linear probes
# ---------------------------------------------------------------------------------------------------------------
def brute_force_knn(query, bank, labels, k, t, classes):
    preds = []
    for q in query:
        sims = [(float(F.cosine_similarity(q, b, dim=0)), int(y)) for b, y in zip(bank, labels)]
        sims.sort(key=lambda s: -s[0])
        score = [0.0] * classes
        for s, y in sims[:k]:
            score[y] += math.exp(s / t)
        preds.append(max(range(classes), key=lambda c: (score[c], -c)))
    return preds


@pytest.mark.parametrize("k", [1, 7, 50])
def test_knn_matches_a_brute_force_reference(k):
    gen = torch.Generator().manual_seed(k)
    bank, labels = torch.randn(30, 5, generator=gen), torch.randint(0, 3, (30,), generator=gen)
    query = torch.randn(12, 5, generator=gen)
    got = knn_predict(query, bank, labels, num_classes=3, k=k, temperature=0.1, chunk=5)
    assert got.tolist() == brute_force_knn(query, bank, labels, min(k, 30), 0.1, 3)
    truth = torch.randint(0, 3, (12,), generator=gen)
    assert knn_accuracy(query, truth, bank, labels, num_classes=3, k=k, temperature=0.1) == \
        sum(int(a == b) for a, b in zip(got.tolist(), truth.tolist())) / 12


def test_linear_probe_separates_separable_features_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (120,), generator=gen)
    x = torch.randn(120, 4, generator=gen) * 0.1 + F.one_hot(y, 4).float()
    assert linear_probe(x[:80], y[:80], x[80:], y[80:]) == 1.0
    noise = torch.randn(120, 4, generator=gen)
    assert linear_probe(noise[:80], y[:80], noise[80:], y[80:]) < 0.8


# ---------------------------------------------------------------------------------------------------------------
# augmentations
# ---------------------------------------------------------------------------------------------------------------
def test_hsv_round_trip_and_agrees_with_colorsys():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 4, 4, generator=gen)
    x[0, :, 0, 0] = 0.5  # grey: hue 0, saturation 0
    hsv = rgb_to_hsv(x)
    for n, i, j in ((0, 0, 0), (1, 2, 3), (2, 1, 1), (0, 3, 2)):
        ref = colorsys.rgb_to_hsv(*x[n, :, i, j].tolist())
        assert hsv[n, :, i, j].tolist() == pytest.approx(ref, abs=1e-6)
    assert torch.allclose(hsv_to_rgb(hsv), x, atol=1e-6)


def test_resized_crop_full_box_is_identity_and_a_quarter_box_is_an_upsampled_crop():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=gen)
    assert torch.allclose(random_resized_crop(x, scale=(1, 1), ratio=(1, 1), flip=False, generator=gen), x,
                          atol=1e-6)
    flipped = random_resized_crop(x, scale=(1, 1), ratio=(1, 1), flip=True, generator=gen)
    for img, out in zip(x, flipped):  # each image: as is, or mirrored
        assert torch.allclose(out, img, atol=1e-6) or torch.allclose(out, img.flip(-1), atol=1e-6)
    crops = random_resized_crop(x, scale=(0.25, 0.25), ratio=(1, 1), flip=False, generator=gen)
    for img, out in zip(x, crops):  # a 4×4 box somewhere, resized like F.interpolate (bilinear) does
        candidates = [F.interpolate(img[None, :, i:i + 4, j:j + 4], size=(8, 8), mode="bilinear",
                                    align_corners=False)[0] for i in range(5) for j in range(5)]
        assert any(torch.allclose(out, c, atol=1e-5) for c in candidates)


def test_colour_jitter_and_grayscale_properties():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 6, 6, generator=gen)
    assert torch.equal(color_jitter(x, p=0.0, generator=gen), x)
    out = color_jitter(x, p=1.0, generator=gen)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, x)
    a = color_jitter(x, generator=torch.Generator().manual_seed(5))
    b = color_jitter(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    grey = x[:, :1]
    assert torch.equal(color_jitter(grey, brightness=0, contrast=0, p=1.0, generator=gen), grey)  # no-ops on grey
    g = random_grayscale(x, p=1.0, generator=gen)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert all(torch.allclose(g[:, c], luma, atol=1e-6) for c in range(3))


# ---------------------------------------------------------------------------------------------------------------
# the tasks
# ---------------------------------------------------------------------------------------------------------------
def test_task_names_splits_and_head_adapter():
    assert canonical_name("simclr/digits") == "simclr/digits"
    for bad in ("simclr/", "simclr/glue/sst2", "moco/simclr/digits", "byol/digits"):
        with pytest.raises(TicketsError):
            canonical_name(bad)
    p = prepare("small-cnn", "simclr/digits", data=DATA, prunable="all")
    assert isinstance(p.model.head, ProjectionHead) and p.spec.num_outputs == 128
    assert p.task.primary_metric == "ssl_loss" and not higher_is_better("ssl_loss")
    assert not any(n.startswith("head.") for n in p.names)  # the projection head is never pruned
    assert "conv1.weight" in p.names
    batch = next(iter(p.task.val.batches(8)))
    again = next(iter(p.task.val.batches(8)))
    assert set(batch) == {"x", "v1", "v2", "y"} and torch.equal(batch["v1"], again["v1"])  # fixed eval views
    assert not torch.equal(batch["v1"], batch["v2"])
    t1 = next(iter(p.task.train.batches(8, augment=True, generator=torch.Generator().manual_seed(0))))
    t2 = next(iter(p.task.train.batches(8, augment=True, generator=torch.Generator().manual_seed(1))))
    assert not torch.equal(t1["v1"], t2["v1"])
    with pytest.raises(TicketsError, match="adversarial"):
        from tickets.training.attacks import training_perturbation
        from tickets.config import AdversarialConfig

        training_perturbation(AdversarialConfig(), p.task)


def test_options_are_checked():
    with pytest.raises(TicketsError, match="temperature"):
        load_contrastive_task("simclr/digits", data=DATA, options=ContrastiveOptions(temperature=0.0))


@pytest.mark.parametrize("objective", ["simclr", "moco"])
def test_find_on_the_objective_selects_the_lowest_loss_epoch(tmp_path, objective):
    cfg = FindConfig(model="small-cnn", task=f"{objective}/digits", method="imp", train=TrainConfig(
        epochs=3, batch_size=64, lr=0.05), data=DATA, schedule=ScheduleConfig(kind="explicit", sparsities=[0.3]))
    res = find_tickets(cfg, out=tmp_path, device="cpu", progress=False)
    assert [round(r["sparsity"], 2) for r in res.levels] == [0.0, 0.3]
    for level in range(2):
        m = read_json(res.path / f"level-{level:02d}" / "metrics.json")
        losses = [h["val"]["ssl_loss"] for h in m["history"]]
        assert m["primary_metric"] == "ssl_loss"
        assert m["best_epoch"] == losses.index(min(losses)) and m["val"]["ssl_loss"] == min(losses)
        assert 0.0 <= m["test"]["knn_accuracy"] <= 1.0 and m["test"]["examples"] > 0
        if objective == "moco" and level == 0:
            assert losses.index(min(losses)) != len(losses) - 1  # here the best epoch is not the last one
    assert res.ticket(1).meta["source_task"] == f"{objective}/digits"


@pytest.mark.parametrize("method", ["omp", "random"])
def test_one_shot_methods_draw_tickets_on_the_objective(tmp_path, method):
    cfg = FindConfig(model="small-cnn", task="simclr/digits", method=method, train=TrainConfig(epochs=1),
                     data=DATA, schedule=ScheduleConfig(kind="explicit", sparsities=[0.5]))
    res = find_tickets(cfg, out=tmp_path, device="cpu", progress=False)
    (level,) = res.levels
    assert level["sparsity"] == pytest.approx(0.5, abs=1e-3) and level["primary_metric"] == "ssl_loss"
    assert not any(n.startswith("head.") for n in res.ticket(0).mask.names)
