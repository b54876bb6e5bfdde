"""Sparsity patterns: groups found, selection (exact groups, nesting, global vs layer-wise), N:M counts, verify."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tickets.errors import TicketsError
from tickets.masks import Mask, PrunableSet
from tickets.patterns import PATTERNS, get_pattern, pattern_from_meta
from tickets.pruning import random_prune

# --------------------------------------------------------------------------------------------------------------
# unstructured stays what it was
# --------------------------------------------------------------------------------------------------------------


def test_unstructured_random_and_reports_unchanged():
    mask = Mask({"a": torch.ones(6, 5, dtype=torch.bool), "b": torch.ones(7, dtype=torch.bool)})
    pattern = get_pattern("unstructured")
    got = pattern.select_random(mask, 0.4, generator=torch.Generator().manual_seed(3))
    want = random_prune(mask, 0.4, generator=torch.Generator().manual_seed(3))
    assert got.equal(want)
    assert pattern.expand(got) is got
    rep = pattern.group_report(got)
    assert (rep["total"], rep["pruned"], rep["unit"]) == (37, got.num_pruned, "weights")
    assert pattern.describe() == {"name": "unstructured"}


def test_registry_lists_every_pattern():
    for name in ("unstructured", "channel", "head", "neuron", "head+neuron", "nm"):
        assert name in PATTERNS
    with pytest.raises(TicketsError, match="channel:l1 or channel:l2"):
        get_pattern("channel:l3")
    with pytest.raises(TicketsError, match="min=0"):
        get_pattern("head:max=3")
    with pytest.raises(TicketsError, match="takes no options"):
        get_pattern("unstructured:x")


# --------------------------------------------------------------------------------------------------------------
# channel: a hand-made residual CNN
# --------------------------------------------------------------------------------------------------------------


class Residual(nn.Module):
    """stem 3→4 (+BN) → block [conv1 4→5, BN, ReLU, conv2 5→4, BN] + identity → ReLU → pool → fc 4→3."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv2d(4, 5, 3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(5)
        self.conv2 = nn.Conv2d(5, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(x + y), 1).flatten(1))


def _residual():
    torch.manual_seed(0)
    model = Residual().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(0.1, 0.5)  # live shifts: a pruned channel must have them masked too
    names = PrunableSet("cnn").resolve(model)
    pattern = get_pattern("channel")
    pattern.setup(model, names, example_inputs=torch.rand(1, 3, 6, 6))
    return model, names, pattern


def _slices(group):
    return {(n, d): i.tolist() for n, d, i in group.slices}


def test_channel_groups_follow_the_residual_stream():
    pytest.importorskip("torch_pruning")
    model, names, pattern = _residual()
    assert names == ["conv1.weight", "conv2.weight"]
    assert len(pattern.groups) == 4 + 5  # residual stream (4) + the block's inner channels (5)
    stream = next(g for g in pattern.groups if ("conv2.weight", 0) in _slices(g) and _slices(g)[("conv2.weight", 0)] == [2])
    assert _slices(stream) == {
        ("stem.weight", 0): [2], ("stem_bn.weight", 0): [2], ("stem_bn.bias", 0): [2],
        ("conv1.weight", 1): [2], ("conv2.weight", 0): [2], ("bn2.weight", 0): [2], ("bn2.bias", 0): [2],
        ("fc.weight", 1): [2],
    }
    inner = next(g for g in pattern.groups if _slices(g).get(("conv1.weight", 0)) == [3])
    assert _slices(inner) == {("conv1.weight", 0): [3], ("conv1.bias", 0): [3], ("bn1.weight", 0): [3],
                              ("bn1.bias", 0): [3], ("conv2.weight", 1): [3]}
    assert pattern.describe()["groups"] == 9 and pattern.describe()["unit"] == "channels"


def _brute_scores(pattern, scores, mask, p=1):
    """Independent group scores: build each group's element set explicitly and sum |s|^p over it."""
    out = []
    for g in pattern.groups:
        total = 0.0
        for name in mask.names:
            member = torch.zeros(mask[name].shape, dtype=torch.bool)
            for n, d, idx in g.slices:
                if n == name:
                    member.index_fill_(d, idx, True)
            total += float((scores[name].abs() ** p * (member & mask[name])).sum())
        out.append(total ** (1 / p))
    return torch.tensor(out, dtype=torch.float64)


def test_channel_group_scores_match_brute_force():
    pytest.importorskip("torch_pruning")
    model, names, pattern = _residual()
    gen = torch.Generator().manual_seed(1)
    scores = {n: torch.randn(dict(model.named_parameters())[n].shape, generator=gen) for n in names}
    mask = Mask.ones_like(model, names)
    mask = Mask({n: m.clone() for n, m in mask.items()})
    mask["conv2.weight"][1, 0] = False  # a partly pruned mask: pruned elements must not count
    assert torch.allclose(pattern.group_scores(scores, mask), _brute_scores(pattern, scores, mask))
    l2 = get_pattern("channel:l2")
    l2.setup(model, names, example_inputs=torch.rand(1, 3, 6, 6))
    assert torch.allclose(l2.group_scores(scores, mask), _brute_scores(l2, scores, mask, p=2))


def test_channel_select_exact_groups_nesting_and_scopes():
    pytest.importorskip("torch_pruning")
    model, names, pattern = _residual()
    scores = {n: torch.ones(dict(model.named_parameters())[n].shape) for n in names}
    scores["conv1.weight"][3] = 0.01  # inner channel 3 is the weakest group by far
    mask = Mask.ones_like(model, names)
    inner_size = 4 * 9 + 4 * 9  # conv1 row + conv2 column
    one = pattern.select(scores, mask, inner_size / mask.num_total)
    pruned = pattern.pruned_groups(one)
    assert [pattern.groups[i].label for i in pruned.nonzero().flatten().tolist()] == ["conv1.weight[3]"]
    assert not one["conv1.weight"][3].any() and not one["conv2.weight"][:, 3].any()
    assert one.num_pruned == inner_size
    # nesting: a sparser selection keeps channel 3 pruned and removes only kept weights
    two = pattern.select(scores, one, 0.6)
    assert all(bool((two[n] <= one[n]).all()) for n in names)
    # global: the (cheap) inner groups go first; layer-wise: both families lose the same fraction
    scores = {n: torch.ones(dict(model.named_parameters())[n].shape) for n in names}
    scores["conv1.weight"] *= 0.01
    glob = pattern.select(scores, mask, 0.45, scope="global")
    layer = pattern.select(scores, mask, 0.45, scope="layerwise")
    gp, lp = pattern.pruned_groups(glob), pattern.pruned_groups(layer)
    stream = [i for i, g in enumerate(pattern.groups) if "conv2.weight" in g.keys]
    assert not gp[stream].any() and gp.sum() >= 2
    assert lp[stream].any()
    for m in (glob, layer):
        pattern.verify(m)
        assert abs(m.sparsity - 0.45) < 0.15


def test_channel_keeps_one_output_channel_per_conv_and_random_is_uniform():
    pytest.importorskip("torch_pruning")
    model, names, pattern = _residual()
    mask = Mask.ones_like(model, names)
    dense = pattern.select({n: torch.rand(mask[n].shape) for n in names}, mask, 0.99)
    assert dense["conv1.weight"].reshape(5, -1).any(1).sum() >= 1
    assert dense["conv2.weight"].reshape(4, -1).any(1).sum() >= 1
    a = pattern.select_random(mask, 0.5, generator=torch.Generator().manual_seed(0))
    b = pattern.select_random(mask, 0.5, generator=torch.Generator().manual_seed(0))
    assert a.equal(b)
    pattern.verify(a)


def test_channel_expand_masks_batchnorm_bias_and_classifier_columns():
    pytest.importorskip("torch_pruning")
    model, names, pattern = _residual()
    mask = Mask.ones_like(model, names)
    stream = next(i for i, g in enumerate(pattern.groups) if _slices(g).get(("conv2.weight", 0)) == [1])
    keys = torch.zeros(len(pattern.groups), dtype=torch.float64)
    keys[stream] = -1.0
    one = pattern.select_groups(keys, mask, 0.25)  # the group holds 90 of the 360 prunable weights
    full = pattern.expand(one, model)
    assert set(full.names) >= {"stem.weight", "stem_bn.weight", "stem_bn.bias", "bn2.bias", "fc.weight"}
    assert not full["stem_bn.bias"][1] and full["stem_bn.bias"][0]
    assert not full["fc.weight"][:, 1].any() and full["fc.weight"][:, 0].all()
    assert not full["stem.weight"][1].any()
    assert full["conv1.bias"].all()  # no inner group pruned
    assert one.names == names  # the ticket's mask stays the prunable set


def test_channel_verify_errors():
    pytest.importorskip("torch_pruning")
    model, names, pattern = _residual()
    mask = Mask.ones_like(model, names)
    bad = Mask({n: m.clone() for n, m in mask.items()})
    bad["conv2.weight"][1, 2, 0, 0] = False
    with pytest.raises(TicketsError, match=r"'conv2.weight' does not honour pattern 'channel': entry \(1, 2, 0, 0\)"):
        pattern.verify(bad)
    # a whole row of conv2 without the rest of its residual-stream group is not a channel ticket either
    bad = Mask({n: m.clone() for n, m in mask.items()})
    bad["conv2.weight"][1] = False
    with pytest.raises(TicketsError, match="conv2.weight"):
        pattern.verify(bad)
    # without a model (load_ticket): rows × columns structure
    unset = pattern_from_meta(pattern.describe())
    unset.verify(mask)
    bad = Mask({n: m.clone() for n, m in mask.items()})
    bad["conv1.weight"][0, 0, 1, 1] = False
    with pytest.raises(TicketsError, match=r"'conv1.weight'.*entry \(0, 0, 1, 1\)"):
        unset.verify(bad)
    with pytest.raises(TicketsError, match="not set up"):
        unset.select({}, mask, 0.5)


def test_channel_option_a_shortcuts_are_merged_across_stages():
    pytest.importorskip("torch_pruning")
    from tickets.models import load_model

    spec = load_model("resnet20-cifar10", pretrained=False)
    names = PrunableSet("cnn").resolve(spec.module)
    pattern = get_pattern("channel")
    pattern.setup(spec.module, names, spec)
    # 16 + 32 + 64 stream channels merge into 64 groups (stage-3 width); inner channels 3 × (16 + 32 + 64)
    assert len(pattern.groups) == 64 + 3 * (16 + 32 + 64)
    assert set(pattern.channel_maps) == {"layer2.0.shortcut", "layer3.0.shortcut"}

    def group_of(name, row):
        return next(g for g in pattern.groups if row in _slices(g).get((name, 0), []))

    g = group_of("conv1.weight", 5)  # stage-1 channel 5 → stage-2 channel 13 → stage-3 channel 29
    s = _slices(g)
    assert s[("layer1.2.conv2.weight", 0)] == [5]
    assert s[("layer2.1.conv2.weight", 0)] == [5 + 8]
    assert s[("layer3.2.conv2.weight", 0)] == [5 + 8 + 16]
    assert s[("linear.weight", 1)] == [29]
    pad = group_of("layer2.0.conv2.weight", 0)  # fed only by the padding: no stage-1 channel
    assert not any(n.startswith(("conv1", "layer1.")) for n, _ in _slices(pad))
    assert _slices(pad)[("layer3.0.conv2.weight", 0)] == [16]
    lone = group_of("layer3.0.conv2.weight", 0)
    assert {n for n, d in _slices(lone) if d == 0 and n.endswith("conv2.weight")} == {
        f"layer3.{i}.conv2.weight" for i in range(3)}


def test_channel_depthwise_coupling_mobilenet():
    pytest.importorskip("torch_pruning")
    from tickets.models import load_model

    spec = load_model("mobilenet-v1-0.75", pretrained=False)
    names = PrunableSet("cnn").resolve(spec.module)
    pattern = get_pattern("channel")
    pattern.setup(spec.module, names, spec, example_inputs=torch.rand(1, 3, 32, 32))
    g = next(g for g in pattern.groups if _slices(g).get(("pw1.weight", 0)) == [7])
    assert _slices(g) == {("pw1.weight", 0): [7], ("pw1_bn.weight", 0): [7], ("pw1_bn.bias", 0): [7],
                          ("dw2.weight", 0): [7], ("dw2_bn.weight", 0): [7], ("dw2_bn.bias", 0): [7],
                          ("pw2.weight", 1): [7]}
    stem = next(g for g in pattern.groups if _slices(g).get(("conv1.weight", 0)) == [3])  # stem feeds dw1
    assert ("dw1.weight", 0) in _slices(stem) and "conv1.weight" not in names
    assert len(pattern.groups) == 24 + sum((48, 96, 96, 192, 192, 384, 384, 384, 384, 384, 384, 768, 768))


def test_channel_needs_an_input_size():
    pytest.importorskip("torch_pruning")
    model = Residual()
    with pytest.raises(TicketsError, match="example input"):
        get_pattern("channel").setup(model, ["conv1.weight"])


# --------------------------------------------------------------------------------------------------------------
# N:M
# --------------------------------------------------------------------------------------------------------------


def test_nm_keeps_the_n_largest_of_every_m():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 16, generator=gen)
    conv = torch.randn(4, 3, 3, 3, generator=gen)  # rows of 27: six groups of 4 and a tail of 3
    mask = Mask({"w": torch.ones(6, 16, dtype=torch.bool), "c": torch.ones(4, 3, 3, 3, dtype=torch.bool)})
    p = get_pattern("nm:2:4")
    assert p.fixed_sparsity() == 0.5
    got = p.select({"w": w, "c": conv}, mask, 0.5)
    for name, t in (("w", w), ("c", conv)):
        rows, keep = t.reshape(t.shape[0], -1), got[name].reshape(t.shape[0], -1)
        for r in range(rows.shape[0]):
            for start in range(0, rows.shape[1], 4):
                block = rows[r, start:start + 4].abs()
                want = set(torch.argsort(block, descending=True)[:2].tolist())
                assert set(keep[r, start:start + 4].nonzero().flatten().tolist()) == want
    assert got["w"].sum() == 6 * 16 // 2  # exactly 1 - N/M where rows divide by M
    assert got["c"].sum() == 4 * (6 * 2 + 2)  # the tail of 3 keeps 2
    p.verify(got)
    rep = p.group_report(got)
    assert rep["groups"] == 6 * 4 + 4 * 7 and rep["groups_of_m"] == 6 * 4 + 4 * 6
    # the semi-structured layout: every 4 consecutive weights of a Linear row hold at most 2
    assert int(got["w"].view(6, 4, 4).sum(-1).max()) == 2


def test_nm_nesting_reverse_and_errors():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(4, 8, generator=gen)
    mask = Mask({"w": torch.ones(4, 8, dtype=torch.bool)})
    three = get_pattern("nm:3:4").select({"w": w}, mask, 0.25)
    two = get_pattern("nm:2:4").select({"w": w}, three, 0.5)
    one = get_pattern("nm:1:4").select({"w": w}, two, 0.75)
    assert bool((two["w"] <= three["w"]).all()) and bool((one["w"] <= two["w"]).all())
    assert one["w"].sum() == 8
    rev = get_pattern("nm:1:4").select({"w": w}, mask, 0.75, largest=True)
    smallest = w.abs().view(4, 2, 4).argmin(-1)
    assert torch.equal(rev["w"].view(4, 2, 4).float().argmax(-1), smallest)
    with pytest.raises(TicketsError, match="reaches only sparsity 0.5"):
        get_pattern("nm:2:4").select({"w": w}, mask, 0.6)
    with pytest.raises(TicketsError, match="need 1 <= N < M"):
        get_pattern("nm:4:4")
    with pytest.raises(TicketsError, match="N:M"):
        get_pattern("nm:two")
    from tickets.patterns.nm import NM

    assert [p.options for p in NM.parse_list("3:4,2:4,1:4")] == ["3:4", "2:4", "1:4"]
    assert NM.of(2, 4).spec() == "nm:2:4"
    with pytest.raises(TicketsError, match="lower N"):
        NM.parse_list("2:4,3:4")
    bad = Mask({"w": two["w"].clone()})
    bad["w"][2, 4:8] = True
    with pytest.raises(TicketsError, match=r"'w' does not honour pattern nm:2:4: row 2, weights 4..7 keep 4"):
        get_pattern("nm:2:4").verify(bad)
    with pytest.raises(TicketsError, match="1-d"):
        get_pattern("nm:2:4").verify(Mask({"b": torch.ones(4, dtype=torch.bool)}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="to_sparse_semi_structured needs a CUDA GPU")
def test_nm_2_4_is_what_to_sparse_semi_structured_takes():  # pragma: no cover - GPU only
    from torch.sparse import to_sparse_semi_structured

    w = torch.randn(128, 128, dtype=torch.float16, device="cuda")
    mask = Mask({"w": torch.ones_like(w, dtype=torch.bool)})
    kept = get_pattern("nm:2:4").select({"w": w}, mask, 0.5)["w"]
    dense = w * kept
    assert torch.equal(to_sparse_semi_structured(dense).to_dense(), dense)


# --------------------------------------------------------------------------------------------------------------
# heads and neurons
# --------------------------------------------------------------------------------------------------------------


def _tiny(kind="bert", layers=2):
    transformers = pytest.importorskip("transformers")
    from tickets.models.hf import hf_spec

    if kind == "distilbert":
        cfg = transformers.DistilBertConfig(vocab_size=60, dim=16, n_layers=layers, n_heads=4, hidden_dim=12)
    elif kind == "roberta":
        cfg = transformers.RobertaConfig(vocab_size=60, hidden_size=16, num_hidden_layers=layers,
                                         num_attention_heads=4, intermediate_size=12)
    else:
        cfg = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=layers,
                                      num_attention_heads=4, intermediate_size=12)
    spec = hf_spec(cfg, tokenizer=None)
    names = PrunableSet("bert").resolve(spec.module)
    return spec, names


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_head_groups_per_naming(kind):
    spec, names = _tiny(kind)
    p = get_pattern("head")
    p.setup(spec.module, names, spec)
    assert len(p.groups) == 2 * 4 and p.num_heads == 4
    g = next(g for g in p.groups if g.label == "layer 1 head 2")
    rows = list(range(8, 12))
    s = _slices(g)
    q = [n for (n, d) in s if d == 0 and n.endswith("weight")]
    assert len(q) == 3 and all(s[(n, 0)] == rows for n in q)
    out = [n for (n, d) in s if d == 1]
    assert len(out) == 1 and s[(out[0], 1)] == rows and ".1." in out[0]
    assert all(s[(n.replace("weight", "bias"), 0)] == rows for n in q)  # biases ride along (extra tensors)
    n = get_pattern("neuron")
    n.setup(spec.module, names, spec)
    assert len(n.groups) == 2 * 12


def test_head_selection_min_heads_and_verify():
    spec, names = _tiny()
    params = dict(spec.module.named_parameters())
    scores = {n: params[n].detach().abs() for n in names}
    mask = Mask.ones_like(spec.module, names)
    p = get_pattern("head")
    p.setup(spec.module, names, spec)
    brute = _brute_scores(p, scores, mask)
    assert torch.allclose(p.group_scores(scores, mask), brute)
    hi = p.select(scores, mask, 0.9)
    kept = p.kept_units(hi)
    assert [len(r["heads"]) for r in kept] == [1, 1]  # at least one head per layer stays
    weakest = [g.label for g in p.groups if g.label.startswith("layer 0")]
    order = sorted(range(4), key=lambda h: float(brute[h]))
    assert kept[0]["heads"] == [order[-1]] and len(weakest) == 4
    p0 = get_pattern("head:min=0")
    p0.setup(spec.module, names, spec)
    none = p0.select(scores, mask, 0.9)
    assert [len(r["heads"]) for r in p0.kept_units(none)] == [0, 0]
    p.verify(hi)
    # model-free verify from what the ticket records
    rec = pattern_from_meta(p.describe())
    assert rec.num_heads == 4
    rec.verify(hi)
    bad = Mask({k: v.clone() for k, v in hi.items()})
    q = next(n for n in names if n.endswith("layer.0.attention.self.query.weight"))
    bad[q][:, 0] = True  # revive one input column of every head row: no longer whole heads
    bad[q][2, 0] = False
    with pytest.raises(TicketsError, match=f"'{q}' does not honour pattern 'head'"):
        rec.verify(bad)


def test_head_neuron_ranked_together_by_mean():
    spec, names = _tiny()
    params = dict(spec.module.named_parameters())
    scores = {n: params[n].detach().abs() for n in names}
    mask = Mask.ones_like(spec.module, names)
    p = get_pattern("head+neuron")
    p.setup(spec.module, names, spec)
    assert len(p.groups) == 2 * (4 + 12)
    got = p.group_scores(scores, mask)
    sizes = _brute_scores(p, {n: torch.ones_like(s) for n, s in scores.items()}, mask)
    assert torch.allclose(got, _brute_scores(p, scores, mask) / sizes)
    sel = p.select(scores, mask, 0.3)
    rep = p.group_report(sel)
    assert rep["heads"]["total"] == 8 and rep["neurons"]["total"] == 24
    assert rep["pruned"] == rep["heads"]["pruned"] + rep["neurons"]["pruned"] > 0
    full = p.expand(sel, spec.module)
    bias = next(n for n in full.names if n.endswith("layer.0.intermediate.dense.bias"))
    weight = bias.replace("bias", "weight")
    assert torch.equal(full[bias], sel[weight].any(1))


def test_head_pattern_rejects_cnn():
    from tickets.models import load_model

    spec = load_model("small-cnn")
    with pytest.raises(TicketsError, match="BERT-family"):
        get_pattern("head").setup(spec.module, PrunableSet("cnn").resolve(spec.module), spec)


def test_channel_setup_leaves_the_model_alone():
    pytest.importorskip("torch_pruning")
    from tickets.models import load_model

    spec = load_model("resnet20-cifar10", pretrained=False)
    spec.module.train()
    before = {k: v.clone() for k, v in spec.module.state_dict().items()}
    get_pattern("channel").setup(spec.module, PrunableSet("cnn").resolve(spec.module), spec)
    assert spec.module.training
    after = spec.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
