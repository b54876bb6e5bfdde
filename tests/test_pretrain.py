"""``tickets pretrain`` (supervised, adversarial, SimCLR, MoCo v2) and ``tickets eval --probe``: checkpoints that
``--weights`` reads, exact resumption, one-line errors. small-cnn on scikit-learn digits, no files needed."""

import pytest
import torch
from safetensors.torch import load_file

from tickets.cli import main
from tickets.config import DataConfig, EvalConfig, PretrainConfig, SSLConfig, TrainConfig
from tickets.errors import TicketsError
from tickets.hparams import hash_view
from tickets.runs import RunDir
from tickets.training.probe import knn_accuracy, split_features
from tickets.verbs.evaluation import evaluate_model
from tickets.verbs.prepare import prepare
from tickets.verbs.pretrain import pretrain

DATA = DataConfig(train_size=300)
FAST = TrainConfig(epochs=3, batch_size=64, lr=0.05)


def cfg(task, **kw):
    kw.setdefault("train", FAST)
    return PretrainConfig(model="small-cnn", task=task, data=DATA, **kw)


def test_supervised_pretrain_writes_weights_that_find_reads(tmp_path, capsys):
    res = pretrain(cfg("digits", train=TrainConfig(epochs=1, batch_size=64)), out=tmp_path, device="cpu",
                   progress=False)
    assert res.path.name.startswith("pretrain-") and res.weights.is_file()
    saved = load_file(str(res.weights))
    p = prepare("small-cnn", "digits", weights=res.weights, data=DATA, head="pretrained")
    encoder = [k for k in saved if not k.startswith("head.")]
    assert encoder and all(torch.equal(p.theta0[k], saved[k]) for k in encoder)  # θ0 is the pre-trained encoder
    assert torch.equal(p.theta0["head.weight"], saved["head.weight"])  # the same 10 classes: head kept
    again = pretrain(cfg("digits", train=TrainConfig(epochs=1, batch_size=64)), out=tmp_path, device="cpu",
                     progress=False)
    assert again.path == res.path and again.metrics == res.metrics  # a finished run is reused
    code = main(["find", "--model", "small-cnn", "--task", "digits-5-9", "--weights", str(res.weights),
                 "--levels", "1", "--epochs", "1", "--train-size", "300", "--out", str(tmp_path), "--quiet"])
    assert code == 0 and "run: " in capsys.readouterr().out


def test_adversarial_pretrain_records_the_regime_and_robust_accuracy(tmp_path):
    res = pretrain(cfg("digits", train=TrainConfig(epochs=1, batch_size=64, adversarial=None)), out=tmp_path,
                   device="cpu", progress=False)
    from tickets.config import AdversarialConfig, RobustEvalConfig

    adv = pretrain(cfg("digits", train=TrainConfig(epochs=1, batch_size=64, adversarial=AdversarialConfig(
        attack="fgsm", eps=8.0)), robust_eval=RobustEvalConfig(eps=4.0, steps=3, limit=50)), out=tmp_path,
        device="cpu", progress=False)
    assert adv.path != res.path
    assert res.metrics["objective"] == "supervised" and adv.metrics["objective"] == "adversarial-fgsm"
    assert 0.0 <= adv.metrics["robust"]["robust_accuracy"] <= adv.metrics["robust"]["clean_accuracy"]


@pytest.mark.parametrize("objective", ["simclr", "moco"])
def test_ssl_pretrain_exports_encoder_and_projection_and_find_reloads_the_projection(tmp_path, objective):
    res = pretrain(cfg(f"{objective}/digits", train=TrainConfig(epochs=1, batch_size=64),
                       ssl=SSLConfig(queue=128, proj_dim=32)), out=tmp_path, device="cpu", progress=False)
    saved = load_file(str(res.weights))
    heads = sorted(k for k in saved if k.startswith("head."))
    assert heads == ["head.0.bias", "head.0.weight", "head.2.bias", "head.2.weight"]  # no queue, no key encoder
    assert saved["head.2.weight"].shape == (32, 64)
    assert 0.0 <= res.metrics["test"]["knn_accuracy"] <= 1.0
    from tickets.tasks.contrastive import ContrastiveOptions, load_contrastive_task
    from tickets.models import load_model

    spec = load_model("small-cnn", weights=res.weights)
    task = load_contrastive_task(f"{objective}/digits", model=spec, data=DATA, options=ContrastiveOptions(
        queue=128, proj_dim=32))
    p = prepare(spec, task, head="pretrained")
    assert all(torch.equal(p.theta0[k], saved[k]) for k in saved)  # encoder and projection head
    with pytest.raises(TicketsError, match="projection"):
        prepare(load_model("small-cnn", weights=res.weights), f"{objective}/digits", head="pretrained", data=DATA)


@pytest.mark.parametrize("objective", ["simclr", "moco"])
def test_killed_ssl_pretrain_resumes_bit_for_bit(tmp_path, monkeypatch, objective):
    config = cfg(f"{objective}/digits", ssl=SSLConfig(queue=100))
    clean = pretrain(config, out=tmp_path / "a", device="cpu", progress=False)

    original = RunDir.save_checkpoint
    seen = {}

    def dying_save(self, level, state):
        original(self, level, state)
        if state["epoch"] == 0:
            seen["keys"] = set(state["model"])
            raise KeyboardInterrupt  # killed after the first epoch

    monkeypatch.setattr(RunDir, "save_checkpoint", dying_save)
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, out=tmp_path / "b", device="cpu", progress=False)
    if objective == "moco":  # the queue and the momentum encoder are in the checkpoint
        assert {"head.queue", "head.queue_ptr", "head.key_ready", "head.key__conv1__weight"} <= seen["keys"]
    monkeypatch.setattr(RunDir, "save_checkpoint", original)
    resumed = pretrain(config, out=tmp_path / "b", device="cpu", progress=False)
    events = [e["event"] for e in RunDir(tmp_path / "b", "pretrain", _config(resumed.path)).events()]
    assert "resume" in events
    a, b = load_file(str(clean.weights)), load_file(str(resumed.weights))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    assert clean.metrics["test"] == resumed.metrics["test"] and clean.metrics["val"] == resumed.metrics["val"]


def _config(path):
    import yaml

    return yaml.safe_load((path / "config.yaml").read_text())


@pytest.mark.parametrize("argv,match", [
    (["--task", "simclr/digits", "--adv", "pgd"], "self-supervised"),
    (["--task", "digits", "--ssl-temperature", "0.1"], "--ssl-"),
    (["--task", "digits", "--init", "pretrained", "--weights", "x.safetensors"], "one starting point"),
    (["--task", "moco/glue/sst2"], "image set"),
    (["--task", "simclr/digits", "--ssl-momentum", "1.0"], "momentum"),
])
def test_bad_pretrain_settings_are_one_line_errors(tmp_path, capsys, argv, match):
    code = main(["pretrain", "--model", "small-cnn", *argv, "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1


def test_eval_probes_score_the_encoder_by_knn_and_linear(tmp_path, capsys):
    base = dict(model="small-cnn", task="digits", data=DataConfig(augment=False, val_size=0, limit=100))
    knn = evaluate_model(EvalConfig(probe="knn", **base), device="cpu")
    p = prepare("small-cnn", "digits", data=DataConfig(augment=False, val_size=0, limit=100))
    bank, bank_y = split_features(p.model, p.task.train)
    feats, y = split_features(p.model, p.task.test.limit(100))
    assert knn["primary_metric"] == "knn_accuracy" and knn["examples"] == 100
    assert knn["knn_accuracy"] == knn_accuracy(feats, y, bank, bank_y, num_classes=10)  # the whole training split
    linear = evaluate_model(EvalConfig(probe="linear", **base), device="cpu")
    assert 0.5 < linear["linear_accuracy"] <= 1.0  # random conv features are linearly separable on digits
    from tickets.masks import Mask
    from tickets.pruning import random_prune
    from tickets.ticket import Ticket, save_ticket

    mask = random_prune(Mask.ones_like(p.model, p.names), 0.9, generator=torch.Generator().manual_seed(0))
    save_ticket(tmp_path / "t.safetensors", Ticket(mask, {"model": "small-cnn"}))
    masked = evaluate_model(EvalConfig(probe="knn", ticket=str(tmp_path / "t.safetensors"), **base), device="cpu")
    mask.apply_(p.model)
    bank, bank_y = split_features(p.model, p.task.train)
    feats, y = split_features(p.model, p.task.test.limit(100))
    assert masked["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert masked["knn_accuracy"] == knn_accuracy(feats, y, bank, bank_y, num_classes=10)  # under the mask
    assert main(["eval", "--model", "small-cnn", "--task", "digits", "--probe", "knn", "--limit", "50"]) == 0
    assert "knn_accuracy" in capsys.readouterr().out
    assert main(["eval", "--model", "small-cnn", "--task", "digits", "--probe", "knn", "--attack", "pgd"]) == 2
    assert "hash" not in hash_view(EvalConfig()) and "probe" not in hash_view(EvalConfig())  # since=2: no move
