"""Data-parallel training (torchrun, gloo on CPU) equals single-process training on the same global batch; mixed
precision keeps pruned weights exactly zero."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tickets.config import FindConfig, ScheduleConfig, TrainConfig
from tickets.masks import Mask
from tickets.pruning import random_prune
from tickets.ticket import load_ticket
from tickets.verbs.find import find_tickets

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "plugins"
ARGS = ["find", "--plugin", "toy_plugin", "--model", "toy-mlp", "--task", "digits-5-9", "--sparsities", "0.5,0.8",
        "--epochs", "2", "--batch-size", "64", "--train-size", "400", "--optimizer", "sgd", "--lr", "0.05",
        "--device", "cpu", "--quiet", "--threads", "1"]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def test_two_ranks_draw_the_same_tickets_as_one_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    one = subprocess.run([sys.executable, "-m", "tickets", *ARGS, "--out", str(single)], capture_output=True,
                         text=True, env=_env(), cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          "29731", "-m", "tickets", *ARGS, "--out", str(ddp)], capture_output=True, text=True,
                         env=_env(), cwd=tmp_path, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = next(single.glob("find-*")), next(ddp.glob("find-*"))
    assert a.name == b.name  # the same run: data parallelism is not part of a run's identity
    for level in (0, 1, 2):
        ta = load_ticket(a / f"level-{level:02d}" / "ticket.safetensors")
        tb = load_ticket(b / f"level-{level:02d}" / "ticket.safetensors")
        assert ta.mask.equal(tb.mask), f"level {level}: the two ranks' tickets differ from the single process's"
        ma = json.loads((a / f"level-{level:02d}" / "metrics.json").read_text())
        mb = json.loads((b / f"level-{level:02d}" / "metrics.json").read_text())
        assert mb["test"]["accuracy"] == pytest.approx(ma["test"]["accuracy"], abs=0.02)
        for ha, hb in zip(ma["history"], mb["history"]):
            assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-3)
    assert not list(ddp.rglob("*.tmp"))  # one writer: rank 0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_keeps_pruned_weights_exactly_zero(precision, tmp_path):
    from tickets.training.loop import fine_tune
    from tickets.verbs.prepare import prepare
    from tickets.tasks import DataConfig

    p = prepare("small-cnn", "digits-5-9", data=DataConfig(train_size=300))
    mask = random_prune(Mask.ones_like(p.model, p.names), 0.7, generator=torch.Generator().manual_seed(0))
    before = {n: t.clone() for n, t in p.model.state_dict().items()}
    cfg = TrainConfig(epochs=1, batch_size=64, optimizer="adamw", lr=3e-3, weight_decay=0.01, precision=precision)
    try:
        fine_tune(p.model, p.task, cfg, mask=mask, device="cpu", progress=False)
    except RuntimeError as exc:  # pragma: no cover - a CPU build without fp16 autocast kernels
        pytest.skip(f"{precision} autocast unavailable on this CPU build: {exc}")
    params = dict(p.model.named_parameters())
    for name, m in mask.items():
        w = params[name].detach()
        assert w.dtype == torch.float32  # master weights stay float32
        assert torch.all(w[~m] == 0) and not torch.equal(w[m], before[name][m])


def test_precision_is_part_of_a_runs_identity(tmp_path):
    base = dict(model="small-cnn", task="digits-5-9", schedule=ScheduleConfig(kind="explicit", sparsities=[0.5]))
    from tickets.verbs.find import run_path

    fp32 = run_path(FindConfig(**base, train=TrainConfig(epochs=1)), tmp_path)
    bf16 = run_path(FindConfig(**base, train=TrainConfig(epochs=1, precision="bf16")), tmp_path)
    assert fp32 != bf16
    assert fp32 == run_path(FindConfig(**base, train=TrainConfig(epochs=1, precision="fp32")), tmp_path)
    r = find_tickets(FindConfig(**base, train=TrainConfig(epochs=1, batch_size=64, precision="bf16")), out=tmp_path,
                     device="cpu", progress=False)
    assert r.path == bf16


@pytest.mark.parametrize("world", [2, 3])
def test_length_bucketed_text_batches_shard_into_the_global_batch(world):
    """Without torchrun: each rank's shard of a padded text batch (rows of input_ids, attention_mask,
    token_type_ids, labels), its loss weighted by its share, gives gradients that sum to the global batch's."""
    transformers = pytest.importorskip("transformers")
    from types import SimpleNamespace

    from tickets.models.hf import hf_spec
    from tickets.training.distributed import DistributedCallback

    cfg = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=24)
    spec = hf_spec(cfg, tokenizer=None)
    spec.module.set_pooling("mean")
    model = spec.module.eval()  # no dropout: the shards must see the same function
    gen = torch.Generator().manual_seed(0)
    n, length = 7, 9  # 7 rows do not split evenly: shares 4/3 or 3/2/2
    ids = torch.randint(5, 60, (n, length), generator=gen)
    att = torch.ones(n, length, dtype=torch.long)
    for i, keep in enumerate([9, 4, 7, 2, 9, 5, 3]):  # a bucket of mixed lengths, padded to the longest
        att[i, keep:] = 0
    batch = {"input_ids": ids, "attention_mask": att, "token_type_ids": torch.zeros_like(ids),
             "labels": torch.randint(0, 2, (n,), generator=gen)}

    def grads(b, weight=1.0):
        model.zero_grad(set_to_none=True)
        (model(**b).loss * weight).backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    full = grads(batch)
    summed: dict = {}
    rows = []
    for r in range(world):
        cb = DistributedCallback()
        cb.world, cb.rank = world, r
        state = SimpleNamespace(loss_weight=1.0)
        shard = cb.on_batch(state, batch)
        assert shard["input_ids"].shape[1] == length  # every rank keeps the bucket's padded length
        rows.append(shard["input_ids"])
        for k, g in grads(shard, state.loss_weight).items():
            summed[k] = summed.get(k, 0) + g
    assert torch.equal(torch.cat(rows), ids)  # the shards, in rank order, are the global batch
    assert summed.keys() == full.keys()
    worst = max(float((summed[k] - full[k]).abs().max()) for k in full)
    assert worst <= 1e-6, worst
