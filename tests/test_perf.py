"""Correctness of the speed changes (issue 11); speed itself is measured in benchmarks/, never asserted here.

Each fast path is compared with an independent reference: ``masked_fill_`` for the mask, one forward / the plain
batching for evaluation, the unpacked checkpoint for the packed one, an uninterrupted run for a resumed one,
``optimizer.step()`` for the step that skips the torch._dynamo import.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tickets.config import TrainConfig, hash_view
from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.pruning import random_prune
from tickets.tasks.base import DataConfig
from tickets.training.callbacks import (Callback, CheckpointCallback, pack_checkpoint, pack_tensor,
                                        unpack_checkpoint, unpack_tensor)
from tickets.training.evaluate import _batch_size, eval_batches, evaluate, forward_in_chunks, inference_copy
from tickets.training.loop import fine_tune, make_optimizer, optimizer_step
from tickets.verbs.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
DATA = DataConfig(train_size=400)


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def bits(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns, so NaN payloads and -0.0 count."""
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.detach().contiguous().view(ints[t.element_size()]) if t.is_floating_point() else t


def same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(bits(a[k]), bits(b[k])) for k in a)


def legacy_apply_(mask: Mask, model: nn.Module) -> None:
    """The reference: what Mask.apply_ did before (masked_fill_ of the inverted mask, tensor by tensor)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in mask.items():
            params[name].masked_fill_(~m.to(params[name].device), 0)


def legacy_mask_grads_(mask: Mask, model: nn.Module) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in mask.items():
            if params[name].grad is not None:
                params[name].grad.masked_fill_(~m.to(params[name].device), 0)


def poisoned(shape, dtype, gen) -> torch.Tensor:
    """Random values with NaN, ±Inf, -0.0 and +0.0 sprinkled in."""
    t = torch.randn(shape, generator=gen).to(dtype)
    flat = t.view(-1)
    k = flat.numel()
    for value in (float("nan"), float("inf"), float("-inf"), -0.0, 0.0):
        flat[torch.randint(0, k, (max(1, k // 20),), generator=gen)] = value
    return t


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(32, 16)
        self.out = nn.Linear(16, 4)


def net_and_mask(dtype=torch.float32, sparsity=0.6, seed=0):
    model = Net().to(dtype)
    names = ["conv.weight", "fc.weight", "out.weight"]
    mask = random_prune(Mask.ones_like(model, names), sparsity, generator=torch.Generator().manual_seed(seed))
    return model, mask


# ---------------------------------------------------------------------------------------------------------------
# 1. mask work
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_apply_and_mask_grads_equal_masked_fill_bit_for_bit(dtype, channels_last):
    gen = torch.Generator().manual_seed(1)
    model, mask = net_and_mask(dtype)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(poisoned(p.shape, dtype, gen))
            p.grad = poisoned(p.shape, dtype, gen)
    reference = copy.deepcopy(model)
    for p, q in zip(model.parameters(), reference.parameters()):
        q.grad = p.grad.clone()
    for _ in range(2):  # the second call runs on the cached masks
        mask.apply_(model)
        mask.mask_grads_(model)
        legacy_apply_(mask, reference)
        legacy_mask_grads_(mask, reference)
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            assert torch.equal(bits(p), bits(q)), name
            assert torch.equal(bits(p.grad), bits(q.grad)), name
    for name, m in mask.items():  # pruned entries are +0.0 in weights and gradients, NaN/Inf included
        p = dict(model.named_parameters())[name]
        assert torch.all(bits(p)[~m] == 0) and torch.all(bits(p.grad)[~m] == 0)
        assert torch.isnan(p[m]).any() or torch.isinf(p[m]).any()  # kept entries are left alone, NaN too


def test_mask_cache_follows_the_model():
    model, mask = net_and_mask()
    mask.apply_(model)
    model.fc = nn.Linear(32, 16)  # a new parameter object under the same name
    mask.apply_(model)
    assert torch.all(model.fc.weight[~mask["fc.weight"]] == 0)
    model.double()  # same objects, new dtype
    with torch.no_grad():
        model.out.weight.fill_(1.0)
    mask.apply_(model)
    assert torch.all(model.out.weight[~mask["out.weight"]] == 0) and torch.all(model.out.weight[mask["out.weight"]] == 1)
    other, _ = net_and_mask()  # another model with the same layout
    mask.apply_(other)
    assert torch.all(other.conv.weight[~mask["conv.weight"]] == 0)
    model.fc = nn.Linear(32, 8)
    with pytest.raises(TicketsError, match="shape"):
        mask.apply_(model)
    mask["conv.weight"].fill_(True)  # a mask tensor edited in place: the cached masks follow
    with torch.no_grad():
        other.conv.weight.fill_(2.0)
    mask.apply_(other)
    assert torch.all(other.conv.weight == 2.0)
    dense = Mask.ones_like(other, ["conv.weight"])
    before = other.conv.weight.detach().clone()
    dense.apply_(other)
    assert torch.equal(other.conv.weight, before)
    copy.deepcopy(mask).apply_(other)  # masks with a cache still copy and pickle
    pickle.loads(pickle.dumps(mask)).apply_(other)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_masked_fine_tune_equals_masked_fill_reference(optimizer, monkeypatch):
    cfg = TrainConfig(epochs=2, batch_size=64, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-3,
                      weight_decay=0.01, lr_schedule="constant")
    states = []
    for impl in ("new", "legacy"):
        if impl == "legacy":
            monkeypatch.setattr(Mask, "apply_", legacy_apply_)
            monkeypatch.setattr(Mask, "mask_grads_", legacy_mask_grads_)
        p = prepare("small-cnn", "digits-5-9", data=DATA)
        mask = random_prune(Mask.ones_like(p.model, p.names), 0.7, generator=torch.Generator().manual_seed(0))
        fine_tune(p.model, p.task, cfg, mask=mask, device="cpu", seed=2, progress=False)
        states.append({k: v.clone() for k, v in p.model.state_dict().items()})
        params = dict(p.model.named_parameters())
        for name, m in mask.items():
            assert torch.all(bits(params[name])[~m] == 0), f"{name}: a pruned weight is not +0.0"
    assert same_bits(states[0], states[1])


def test_pruned_gradients_are_zero():
    p = prepare("small-cnn", "digits-5-9", data=DATA)
    mask = random_prune(Mask.ones_like(p.model, p.names), 0.5, generator=torch.Generator().manual_seed(0))
    batch = next(p.task.train.batches(32))
    p.task.loss(p.task.forward(p.model, batch), batch).backward()
    mask.mask_grads_(p.model)
    params = dict(p.model.named_parameters())
    for name, m in mask.items():
        assert torch.all(params[name].grad[~m] == 0) and params[name].grad[m].abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# 2. evaluation
# ---------------------------------------------------------------------------------------------------------------
def plain_evaluate(model, task, split, batch_size=256, limit=None):
    """The reference: the split in its order, one forward per requested batch."""
    metric, n = task.new_metric(), 0
    with torch.no_grad():
        for batch in eval_batches(model, task, split, device="cpu", batch_size=batch_size, limit=limit, mask=None,
                                  progress=False, desc="plain"):
            metric.update(task.forward(model, batch), batch)
            n += _batch_size(batch)
    return {**metric.compute(), "examples": n}


@pytest.mark.parametrize("rows", [16, 40])
def test_chunked_forward_is_one_forward_bit_for_bit(rows):
    p = prepare("small-cnn", "digits-5-9", data=DATA)
    model = p.model.eval()
    batch = next(p.task.test.batches(150))
    with torch.no_grad():
        whole = p.task.forward(model, batch)
        chunked = forward_in_chunks(p.task, model, batch, rows)
    assert torch.equal(whole, chunked)


def assert_same_scores(new: dict, old: dict) -> None:
    """The same predictions (accuracy and the predicted-class histogram) and mean losses equal up to rounding."""
    assert new.keys() == old.keys()
    for key in new:
        if key == "loss":
            assert new[key] == pytest.approx(old[key], rel=1e-6)
        else:
            assert new[key] == old[key], key


def test_evaluate_images_same_scores_as_plain_batching():
    p = prepare("small-cnn", "digits-5-9", data=DATA)
    for batch_size in (256, 50, 7):
        assert_same_scores(evaluate(p.model, p.task, "test", device="cpu", batch_size=batch_size),
                           plain_evaluate(p.model, p.task, "test", batch_size))


def test_evaluate_resnet20_same_scores_as_plain_batching(shared_data, shared_models):
    p = prepare("resnet20-cifar10", "cifar10", data=DataConfig(train_size=100), head="pretrained",
                data_root=shared_data, model_root=shared_models)
    new = evaluate(p.model, p.task, "test", device="cpu", batch_size=256, limit=300)
    assert_same_scores(new, plain_evaluate(p.model, p.task, "test", 256, limit=300))
    assert new["examples"] == 300


def test_inference_copy_folds_batchnorm_and_leaves_the_model_alone():
    p = prepare("small-cnn", "digits-5-9", data=DATA)
    model = p.model.train()
    mask = random_prune(Mask.ones_like(model, p.names), 0.5, generator=torch.Generator().manual_seed(0))
    mask.apply_(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_copy(model)
    assert model.training and not fast.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())  # every conv → BN pair folded
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.is_contiguous(), k
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    params = dict(model.named_parameters())
    for name, keep in mask.items():  # folding scales a weight: pruned (zero) weights stay zero
        if params[name].dim() == 4:
            folded = dict(fast.named_parameters())[name]
            assert torch.all(folded[~keep] == 0) and torch.all(folded[keep] != 0)
    x = next(p.task.test.batches(64))["x"]
    with torch.no_grad():
        ref, out = model.eval()(x), fast(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5) and torch.equal(out.argmax(1), ref.argmax(1))


def test_evaluate_a_model_without_convolutions_bit_for_bit():
    """No conv, no copy: an MLP on images is scored on itself, in chunks, with the plain loop's exact numbers."""
    p = prepare("small-cnn", "digits-5-9", data=DATA)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).train()
    assert evaluate(mlp, p.task, "test", device="cpu", batch_size=50) == plain_evaluate(mlp, p.task, "test", 50)
    assert mlp.training


def test_inference_copy_of_an_untraceable_model_is_a_plain_copy():
    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.bn(self.conv(x))
            return y.flatten(1) if y.sum() > 0 else -y.flatten(1)

    model = Branchy().eval()
    fast = inference_copy(model)
    assert any(isinstance(m, nn.BatchNorm2d) for m in fast.modules()) and fast is not model
    x = torch.randn(8, 1, 6, 6)
    with torch.no_grad():
        assert torch.allclose(fast(x.contiguous(memory_format=torch.channels_last)), model(x), atol=1e-6)


def test_token_order_is_a_budgeted_length_sorted_partition():
    from tickets.tasks.text import TokenSplit, pack_sequences

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, size=200)
    store = pack_sequences([list(range(5, 5 + int(n))) for n in lengths])
    store["labels"] = rng.integers(0, 2, size=200)
    split = TokenSplit(store, np.arange(200), pad_id=0, max_length=48, token_types=False)
    budget, max_rows = 256, 32
    order = split.token_order(budget, max_rows)
    seen = np.concatenate(order)
    assert sorted(seen.tolist()) == list(range(200))
    widths = [int(split.lengths()[b].max()) for b in order]
    assert widths == sorted(widths, reverse=True)
    for b, w in zip(order, widths):
        assert len(b) <= max_rows and (len(b) * w <= budget or len(b) == 1)
    for b, batch in zip(order, split.token_batches(budget, max_rows=max_rows)):
        assert batch["input_ids"].shape == (len(b), int(split.lengths()[b].max()))
        assert torch.equal(batch["index"], torch.from_numpy(b))
    with pytest.raises(TicketsError):
        split.token_order(0, 4)


def test_evaluate_text_same_predictions_as_plain_batching(shared_data):
    pytest.importorskip("transformers")
    p = prepare("minilm-l6", "glue/sst2", data=DataConfig(train_size=200), data_root=shared_data)
    task, model = p.task, p.model.eval()
    predictions = {}
    for name, batches in (("plain", task.test.limit(120).batches(256)),
                          ("budget", task.test.limit(120).token_batches(2048, max_rows=256))):
        with torch.no_grad():
            for batch in batches:
                pred = task.forward(model, batch).argmax(-1)
                predictions.setdefault(name, {}).update(zip(batch["index"].tolist(), pred.tolist()))
    assert predictions["plain"] == predictions["budget"]
    new = evaluate(model, task, "test", device="cpu", batch_size=256, limit=120)
    old = plain_evaluate(model, task, "test", 256, limit=120)
    assert new["accuracy"] == old["accuracy"] and new["examples"] == old["examples"] == 120
    assert new["loss"] == pytest.approx(old["loss"], rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# 3. checkpoints
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_pack_tensor_round_trips_bit_for_bit(dtype):
    gen = torch.Generator().manual_seed(0)
    t = torch.zeros(64, 32, dtype=dtype)
    t[:5] = poisoned((5, 32), dtype, gen)  # a few rows in use, with NaN, ±Inf, -0.0 and +0.0 among them
    t[30, 3] = -0.0
    packed = pack_tensor(t)
    assert isinstance(packed, dict)
    assert torch.equal(bits(unpack_tensor(packed)), bits(t))
    size = sum(v.numel() * v.element_size() for v in packed.values() if isinstance(v, torch.Tensor))
    assert size < t.numel() * t.element_size() / 4
    cl = torch.zeros(4, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    cl[0, :, 1] = torch.randn(8, 5)
    assert torch.equal(unpack_tensor(pack_tensor(cl)), cl)
    dense = torch.randn(50, 50)
    assert pack_tensor(dense) is dense  # nothing to gain: stored as it is
    ints = torch.zeros(1000, dtype=torch.long)
    assert pack_tensor(ints) is ints


class Checkpoints(Callback):
    """Keeps every checkpoint the CheckpointCallback saves, serialised and read back the way runs.py does."""

    def __init__(self, die_after: int | None = None):
        self.saved: list[dict] = []
        self.bytes: list[int] = []
        self.die_after = die_after

    def save(self, ckpt: dict) -> None:
        buf = io.BytesIO()
        torch.save(ckpt, buf)
        self.bytes.append(buf.getbuffer().nbytes)
        buf.seek(0)
        self.saved.append(torch.load(buf, weights_only=True))
        if self.die_after is not None and ckpt["epoch"] == self.die_after:
            raise KeyboardInterrupt


class DecliningVal(Callback):
    """Makes epoch 0 the best one, so later checkpoints must carry an older best state; keeps the weights the
    last epoch ended with (the loop hands back the best epoch's)."""

    def on_evaluate(self, state, split, metrics):
        metrics["accuracy"] = 0.9 - 0.1 * state.epoch

    def on_epoch_end(self, state, record):
        self.last = {k: v.detach().clone() for k, v in state.model.state_dict().items()}


def untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "examples_per_second"} for h in history]


def masked_run(die_after=None, resume=None, epochs=4, sparsity=0.8):
    p = prepare("small-cnn", "digits-5-9", data=DATA)
    mask = random_prune(Mask.ones_like(p.model, p.names), sparsity, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(epochs=epochs, batch_size=64, optimizer="adamw", lr=1e-3, lr_schedule="linear")
    store = Checkpoints(die_after)
    declining = DecliningVal()
    result = fine_tune(p.model, p.task, cfg, mask=mask, device="cpu", seed=5, progress=False, resume=resume,
                       callbacks=[declining, CheckpointCallback(store.save, [])])
    result.last = declining.last
    return p, result, store


def test_resume_from_packed_checkpoint_with_older_best_is_bit_identical():
    p_clean, clean, store = masked_run()
    assert [c["epoch"] for c in store.saved] == [0, 1, 2] and clean.best_epoch == 0
    assert all(c["format"] == 2 for c in store.saved)
    assert store.saved[0]["best_state"] is None and store.saved[2]["best_state"] is not None
    with pytest.raises(KeyboardInterrupt):
        masked_run(die_after=1)
    for ckpt in (store.saved[1], unpack_checkpoint(store.saved[1])):
        # packed, and the same checkpoint unpacked (format 1); a copy each, as the optimizer steps its tensors
        p, resumed, _ = masked_run(resume=copy.deepcopy(ckpt))
        assert same_bits(p.model.state_dict(), p_clean.model.state_dict())  # the best (first) epoch's
        assert same_bits(resumed.last, clean.last)  # the last epoch's, trained after the resume
        assert untimed(resumed.history) == untimed(clean.history) and resumed.val == clean.val
        assert resumed.best_epoch == clean.best_epoch == 0


def test_packed_checkpoint_is_less_than_half_of_the_plain_one():
    p, _, store = masked_run(epochs=3)
    plain = []
    for ckpt in store.saved:
        buf = io.BytesIO()
        torch.save(unpack_checkpoint(ckpt), buf)
        plain.append(buf.getbuffer().nbytes)
    assert all(b < 0.5 * a for a, b in zip(plain, store.bytes)), (plain, store.bytes)


def test_unpack_checkpoint_formats():
    p, _, store = masked_run(epochs=2)
    plain = unpack_checkpoint(store.saved[0])
    assert "format" not in plain and unpack_checkpoint(plain) is plain  # format 1 passes through
    again = pack_checkpoint(plain)
    assert same_bits(unpack_checkpoint(again)["model"], plain["model"])
    with pytest.raises(TicketsError, match="format"):
        unpack_checkpoint({**store.saved[0], "format": 99})


# ---------------------------------------------------------------------------------------------------------------
# 4. channels-last and compile
# ---------------------------------------------------------------------------------------------------------------
def test_layout_options_enter_the_hash_only_when_on():
    base = hash_view(TrainConfig())
    assert "channels_last" not in base and "compile" not in base
    assert hash_view(TrainConfig(channels_last=True))["channels_last"] is True
    assert hash_view(TrainConfig(compile=True))["compile"] is True


def test_channels_last_training_is_deterministic_and_hands_back_contiguous_weights():
    states = []
    for _ in range(2):
        p = prepare("small-cnn", "digits-5-9", data=DATA)
        mask = random_prune(Mask.ones_like(p.model, p.names), 0.5, generator=torch.Generator().manual_seed(0))
        cfg = TrainConfig(epochs=2, batch_size=64, optimizer="sgd", lr=0.05, channels_last=True)
        fine_tune(p.model, p.task, cfg, mask=mask, device="cpu", seed=1, progress=False)
        states.append({k: v.clone() for k, v in p.model.state_dict().items()})
        assert all(t.is_contiguous() for t in p.model.state_dict().values())
        params = dict(p.model.named_parameters())
        assert all(torch.all(params[n][~m] == 0) for n, m in mask.items())
    assert same_bits(states[0], states[1])


@pytest.mark.slow
def test_compiled_training_is_deterministic_and_resumes_bit_for_bit():
    pytest.importorskip("torch._inductor")

    def run(die_after=None, resume=None):
        p = prepare("small-cnn", "digits-5-9", data=DataConfig(train_size=200))
        cfg = TrainConfig(epochs=2, batch_size=64, optimizer="sgd", lr=0.05, compile=True, select_best=False)
        store = Checkpoints(die_after)
        fine_tune(p.model, p.task, cfg, device="cpu", seed=1, progress=False, resume=resume,
                  callbacks=[CheckpointCallback(store.save, [])])
        return {k: v.clone() for k, v in p.model.state_dict().items()}, store

    first, store = run()
    second, _ = run()
    assert same_bits(first, second)
    resumed, _ = run(resume=copy.deepcopy(store.saved[0]))
    assert same_bits(first, resumed)
    eager = prepare("small-cnn", "digits-5-9", data=DataConfig(train_size=200))
    assert not any(k.startswith("_orig_mod") for k in first) and first.keys() == eager.model.state_dict().keys()


# ---------------------------------------------------------------------------------------------------------------
# 5. start-up: no torch._dynamo import
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer,fused", [("sgd", False), ("adamw", True), ("adamw", False)])
def test_optimizer_step_equals_torch_step(optimizer, fused):
    torch.manual_seed(0)
    model = Net()
    twin = copy.deepcopy(model)
    cfg = TrainConfig(optimizer=optimizer, lr=0.01, weight_decay=0.1, batch_size=8)
    from tickets.config import resolve_train

    cfg = resolve_train(cfg, "cnn")
    opts = [make_optimizer(m, cfg) for m in (model, twin)]
    if not fused:
        opts = [torch.optim.AdamW(m.parameters(), lr=0.01) if optimizer == "adamw" else o
                for m, o in zip((model, twin), opts)]
    x = torch.randn(8, 32)
    for _ in range(3):
        for m, opt, step in ((model, opts[0], optimizer_step), (twin, opts[1], lambda o: o.step())):
            opt.zero_grad()
            (m.out(torch.relu(m.fc(x))) ** 2).mean().backward()
            step(opt)
    assert same_bits(model.state_dict(), twin.state_dict())
    assert str(opts[0].state_dict()) == str(opts[1].state_dict())


def test_training_and_checkpoints_do_not_import_dynamo():
    script = """
import sys, torch
from tickets.config import TrainConfig
from tickets.tasks.base import DataConfig
from tickets.training.callbacks import CheckpointCallback
from tickets.training.loop import fine_tune
from tickets.verbs.prepare import prepare
saved = []
for opt in ("sgd", "adamw"):
    p = prepare("small-cnn", "digits-5-9", data=DataConfig(train_size=200))
    cfg = TrainConfig(epochs=2, batch_size=64, optimizer=opt, lr=0.01, grad_clip=1.0)
    fine_tune(p.model, p.task, cfg, device="cpu", progress=False, callbacks=[CheckpointCallback(saved.append, [])])
    p.load_weights(p.theta0)
    fine_tune(p.model, p.task, cfg, device="cpu", progress=False, resume=saved[-1])
print("dynamo", "torch._dynamo" in sys.modules)
import torch._dynamo  # once imported (torch.compile in use), torch's own wrappers take over again
opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
opt.zero_grad()
wrapped = torch.optim.Optimizer.add_param_group.__wrapped__
print("restored", getattr(wrapped, "__dynamo_disable").__name__ != "call")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "dynamo False" in out.stdout and "restored True" in out.stdout, out.stdout
