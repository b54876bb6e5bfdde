"""Attacks, adversarial training and robust evaluation (issue 4).

Unit tests use a tiny CNN on random images and a tiny random BertConfig; the sanity figures on the real
standard-trained ResNet-20 (``shared_data`` / ``shared_models``) use the first 200 CIFAR-10 test images.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tickets.training.attacks import attack_batch, robust_evaluate, training_perturbation
from tickets.config import AdversarialConfig, RobustEvalConfig, TrainConfig, resolve_attack, resolve_train
from tickets.errors import TicketsError
from tickets.models.base import Normalize
from tickets.tasks.base import Task
from tickets.tasks.images import Accuracy, ImageSplit, cross_entropy
from tickets.training.loop import fine_tune

N_REAL = 200  # CIFAR-10 test images for the real-model sanity figures


# --- tiny image task and model ----------------------------------------------------------------------------------
def tiny_image_task(n: int = 96, seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randint(0, 160, (n, 3, 8, 8), generator=g, dtype=torch.int64)
    for i in range(n):  # a learnable hint per class: a bright band in channel y % 3, wider for class 3
        x[i, int(y[i]) % 3, : 2 + 2 * (int(y[i]) // 3)] = 250
    split = ImageSplit(x.to(torch.uint8), y)
    return Task(name="tiny", kind="image", num_outputs=4, train=split, val=split.limit(32), test=split.limit(64),
                primary_metric="accuracy", new_metric=Accuracy, loss_fn=cross_entropy)


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), nn.Conv2d(3, 8, 3, padding=1),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4))


def first_batch(task: Task, n: int = 64) -> dict:
    return next(iter(task.test.batches(n)))


def per_example_loss(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(batch["x"]), batch["y"], reduction="none")


@pytest.fixture(scope="module")
def trained():
    """A tiny CNN trained a little, so the attacks have a decision boundary to push across."""
    task, model = tiny_image_task(), tiny_cnn()
    fine_tune(model, task, TrainConfig(epochs=4, lr=0.1, batch_size=32), progress=False)
    model.zero_grad(set_to_none=True)
    return model.eval(), task


# --- image attacks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_perturbation_stays_in_the_eps_ball_and_in_pixel_range(trained, attack):
    model, task = trained
    batch = first_batch(task)
    adv = attack_batch(model, task, batch, attack=attack, eps=8, steps=5, generator=torch.Generator().manual_seed(0))
    delta = adv["x"] - batch["x"]
    assert delta.abs().max() <= 8 / 255 + 1e-6
    assert delta.abs().max() > 7 / 255  # the budget is actually used
    assert adv["x"].min() >= 0 and adv["x"].max() <= 1
    assert torch.equal(adv["y"], batch["y"])


def test_pgd_loss_at_least_fgsm_at_least_clean(trained):
    model, task = trained
    batch = first_batch(task)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    clean = per_example_loss(model, batch).mean()
    fgsm = per_example_loss(model, attack_batch(model, task, batch, attack="fgsm", eps=8, generator=gen())).mean()
    pgd = per_example_loss(model, attack_batch(model, task, batch, attack="pgd", eps=8, steps=10,
                                               generator=gen())).mean()
    assert pgd >= fgsm >= clean
    assert pgd > clean * 1.1


def test_attacks_are_deterministic_given_the_seed(trained):
    model, task = trained
    batch = first_batch(task, 16)
    a = attack_batch(model, task, batch, eps=8, steps=3, generator=torch.Generator().manual_seed(5))
    b = attack_batch(model, task, batch, eps=8, steps=3, generator=torch.Generator().manual_seed(5))
    c = attack_batch(model, task, batch, eps=8, steps=3, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a["x"], b["x"]) and not torch.equal(a["x"], c["x"])
    r1 = robust_evaluate(model, task, eps=8, steps=3, seed=3, device="cpu")
    r2 = robust_evaluate(model, task, eps=8, steps=3, seed=3, device="cpu")
    assert r1 == r2


def test_eps_zero_gives_exactly_the_clean_figure(trained):
    model, task = trained
    r = robust_evaluate(model, task, attack="pgd", eps=0, steps=5, device="cpu")
    assert r["robust"] == r["clean"] and r["robust_accuracy"] == r["clean_accuracy"]
    assert attack_batch(model, task, first_batch(task), eps=0) is not None
    r8 = robust_evaluate(model, task, attack="pgd", eps=8, steps=5, device="cpu")
    assert r8["clean"] == r["clean"] and r8["robust_accuracy"] < r8["clean_accuracy"]
    assert r8["alpha"] == 2.0 and r8["steps"] == 5 and r8["examples"] == 64


def test_training_perturbation_keeps_clean_rows_and_bn_statistics(trained):
    model, task = trained
    model.train()
    batch = first_batch(task, 40)
    bn = model[2]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    perturb = training_perturbation(AdversarialConfig(attack="pgd", eps=8, steps=2, clean_fraction=0.25), task)
    out = perturb(model, batch)
    assert torch.equal(out["x"][:10], batch["x"][:10])  # round(0.25 · 40) rows stay clean
    assert (out["x"][10:] - batch["x"][10:]).abs().amax(dim=(1, 2, 3)).min() > 0
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]
    assert all(p.grad is None or not p.grad.abs().sum() for p in model.parameters())
    model.eval()


def test_adversarial_fine_tune_is_reproducible_and_differs_from_standard():
    task = tiny_image_task()
    cfg = TrainConfig(epochs=1, lr=0.05, batch_size=32, adversarial=AdversarialConfig(attack="fgsm", eps=8))
    runs = []
    for adv in (cfg, cfg, TrainConfig(epochs=1, lr=0.05, batch_size=32)):
        model = tiny_cnn()
        fine_tune(model, task, adv, progress=False, seed=3)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_resolved_defaults_and_bad_settings():
    assert resolve_attack(AdversarialConfig(), "a").alpha == 2.0  # eps/4 at eps 8
    assert resolve_attack(AdversarialConfig(eps=2), "a").alpha == 0.5
    fgsm = resolve_attack(AdversarialConfig(attack="fgsm", eps=8), "a")
    assert fgsm.alpha == 10.0 and fgsm.steps == 1
    assert resolve_attack(RobustEvalConfig(), "r").steps == 20
    assert resolve_train(TrainConfig(adversarial=AdversarialConfig(eps=4)), "cnn").adversarial.alpha == 1.0
    for bad in (AdversarialConfig(attack="cw"), AdversarialConfig(eps=-1), AdversarialConfig(steps=0),
                AdversarialConfig(clean_fraction=1.0)):
        with pytest.raises(TicketsError):
            resolve_attack(bad, "train.adversarial")


# --- text: PGD on the input embeddings --------------------------------------------------------------------------
class _TextSplit:
    def __init__(self, ids, mask, labels):
        self.ids, self.mask, self.labels = ids, mask, labels

    def __len__(self):
        return len(self.labels)

    def limit(self, n):
        return self if n is None else _TextSplit(self.ids[:n], self.mask[:n], self.labels[:n])

    def batches(self, batch_size, *, shuffle=False, generator=None, augment=False, drop_last=False):
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for i in range(0, len(self), batch_size):
            j = order[i:i + batch_size]
            yield {"input_ids": self.ids[j], "attention_mask": self.mask[j], "labels": self.labels[j]}


class _TextAccuracy:
    def __init__(self):
        self.right, self.n = 0, 0

    def update(self, out, batch):
        self.right += int((out.argmax(-1) == batch["labels"]).sum())
        self.n += len(batch["labels"])

    def compute(self):
        return {"accuracy": self.right / max(1, self.n)}


@pytest.fixture(scope="module")
def tiny_bert():
    transformers = pytest.importorskip("transformers")
    from tickets.models.hf import hf_spec

    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32, pad_token_id=0, num_labels=2)
    spec = hf_spec(cfg, None, name="tiny-bert", seed=0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 40, (12, 7), generator=g)
    mask = torch.ones_like(ids)
    ids[:4, 5:], mask[:4, 5:] = 0, 0  # padding in the first rows
    labels = torch.randint(0, 2, (12,), generator=g)
    split = _TextSplit(ids, mask, labels)
    task = Task(name="tiny-text", kind="text", num_outputs=2, train=split, val=split, test=split,
                primary_metric="accuracy", new_metric=_TextAccuracy,
                loss_fn=lambda out, b: F.cross_entropy(out, b["labels"]))
    return spec.module.eval(), task, split


def test_text_embedding_attack(tiny_bert):
    model, task, split = tiny_bert
    batch = next(iter(split.batches(12)))
    emb = model.base.get_input_embeddings()
    with torch.no_grad():
        same = task.forward(model, {**{k: v for k, v in batch.items() if k != "input_ids"},
                                    "inputs_embeds": emb(batch["input_ids"])})
        assert torch.allclose(same, task.forward(model, batch), atol=1e-6)  # inputs_embeds path == input_ids path
    adv = attack_batch(model, task, batch, attack="pgd", eps=0.5, alpha=0.2, steps=5,
                       generator=torch.Generator().manual_seed(0))
    assert "input_ids" not in adv and adv["inputs_embeds"].shape == (12, 7, 16)
    delta = adv["inputs_embeds"] - emb(batch["input_ids"])
    norms = delta.norm(dim=-1)
    assert norms.max() <= 0.5 + 1e-5 and norms.max() > 0.4
    assert norms[:4, 5:].abs().max() == 0  # padding never perturbed
    with torch.no_grad():
        clean_loss = task.loss(task.forward(model, batch), batch)
        adv_loss = task.loss(task.forward(model, adv), batch)
    assert adv_loss > clean_loss
    r = robust_evaluate(model, task, eps=0.5, alpha=0.2, steps=3, device="cpu")
    assert r["units"] == "embedding L2 per token" and r["robust_accuracy"] <= r["clean_accuracy"]
    assert robust_evaluate(model, task, eps=0, device="cpu")["robust"] == r["clean"]


def test_text_adversarial_training_reaches_the_word_embeddings(tiny_bert):
    model, task, split = tiny_bert
    model.train()
    batch = next(iter(split.batches(12)))
    perturb = training_perturbation(AdversarialConfig(attack="fgsm", eps=0.5, clean_fraction=0.5), task)
    out = perturb(model, batch)
    emb = model.base.get_input_embeddings()
    assert torch.allclose(out["inputs_embeds"][:6], emb(batch["input_ids"][:6]))  # clean half unchanged
    task.loss(task.forward(model, out), batch).backward()
    assert emb.weight.grad is not None and emb.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    model.eval()


# --- CLI --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["eval", "--model", "small-cnn", "--task", "digits", "--eps", "4"], "add --attack"),
    (["eval", "--model", "small-cnn", "--task", "digits", "--attack", "fgsm", "--steps", "3"], "FGSM takes one step"),
    (["find", "--model", "small-cnn", "--task", "digits", "--adv-eps", "4"], "need --adv"),
    (["find", "--model", "small-cnn", "--task", "digits", "--eps", "4"], "add --robust-eval"),
    (["transfer", "--model", "small-cnn", "--task", "digits", "--adv", "fgsm", "--adv-steps", "3"], "one step"),
    (["find", "--model", "small-cnn", "--task", "digits", "--adv", "pgd", "--adv-clean-fraction", "1"], "[0, 1)"),
])
def test_cli_rejects_bad_attack_flags_in_one_line(argv, words, capsys):
    from tickets.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tickets: error:") and words in err and "\n" not in err


# --- the real standard-trained ResNet-20 on real CIFAR-10 test images -------------------------------------------
@pytest.fixture(scope="module")
def real_figures(shared_data, shared_models):
    """FGSM and ε = 0 through the Python API on one loaded model (the PGD figure goes through the CLI)."""
    from tickets.verbs.prepare import prepare
    from tickets.tasks.base import DataConfig

    p = prepare("resnet20-cifar10", "cifar10", head="pretrained", data=DataConfig(augment=False, limit=N_REAL),
                data_root=shared_data, model_root=shared_models)
    common = dict(device="cpu", limit=N_REAL)
    return {"fgsm": robust_evaluate(p.model, p.task, attack="fgsm", eps=8, **common),
            "zero": robust_evaluate(p.model, p.task, attack="pgd", eps=0, **common)}


def test_standard_resnet20_pgd_via_cli_is_near_zero_and_fgsm_in_between(real_figures, shared_data, shared_models,
                                                                         capsys):
    from tickets.cli import main

    rc = main(["eval", "--model", "resnet20-cifar10", "--task", "cifar10", "--attack", "pgd", "--eps", "8",
               "--steps", "10", "--limit", str(N_REAL), "--json", "--quiet", "--device", "cpu",
               "--data-root", str(shared_data), "--model-root", str(shared_models)])
    assert rc == 0
    pgd = json.loads(capsys.readouterr().out)
    clean = pgd["accuracy"]
    assert clean > 0.85 and pgd["robust"]["clean_accuracy"] == clean and pgd["robust"]["examples"] == N_REAL
    assert pgd["robust"]["robust_accuracy"] <= 0.02  # known: non-robust models break at 8/255
    fgsm = real_figures["fgsm"]["robust_accuracy"]
    assert pgd["robust"]["robust_accuracy"] < fgsm < clean == real_figures["fgsm"]["clean_accuracy"]
    assert real_figures["zero"]["robust_accuracy"] == real_figures["zero"]["clean_accuracy"] == clean
