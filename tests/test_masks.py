"""PrunableSet presets (CNNs and BERT-family models found from structure) and Mask bookkeeping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tickets.errors import TicketsError
from tickets.masks import PRESETS, Mask, PrunableSet


class TinyCNN(nn.Module):
    """Stem conv, two more convs (1d/3d included), a Linear classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.seq = nn.Conv1d(4, 4, 1)
        self.vol = nn.Conv3d(1, 2, 1, bias=False)
        self.fc = nn.Linear(4, 10)


@pytest.fixture()
def cnn():
    torch.manual_seed(0)
    return TinyCNN()


# -- presets: CNN --------------------------------------------------------------------------------------------------


def test_cnn_presets(cnn):
    convs = ["stem.weight", "body.0.weight", "seq.weight", "vol.weight"]
    assert PrunableSet("cnn").resolve(cnn) == convs[1:]
    assert PrunableSet("cnn-all").resolve(cnn) == convs
    assert PrunableSet("all").resolve(cnn) == convs + ["fc.weight"]


def test_include_exclude_fullmatch(cnn):
    ps = PrunableSet("all", exclude=(r"fc\..*",))
    assert "fc.weight" not in ps.resolve(cnn)
    # fullmatch: "body" alone must not match "body.0.weight"
    assert PrunableSet(None, include=("body",)).preset is None
    with pytest.raises(TicketsError, match="selects no parameters"):
        PrunableSet(None, include=("body",)).resolve(cnn)
    assert PrunableSet(None, include=(r"body\..*",)).resolve(cnn) == [
        "body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias"
    ]
    # exclude is applied last, after include
    assert PrunableSet("cnn", include=(r"fc\.bias",), exclude=(r".*bias",)).resolve(cnn) == PrunableSet("cnn").resolve(
        cnn
    )


def test_parse_and_roundtrip():
    assert PrunableSet.parse("cnn") == PrunableSet("cnn")
    ps = PrunableSet.parse(r"all,exclude=fc\..*")
    assert ps == PrunableSet("all", exclude=(r"fc\..*",))
    ps = PrunableSet.parse(r"none, include=layer[0-9]{1,2}\..*, exclude=.*bias")
    assert ps == PrunableSet(None, include=(r"layer[0-9]{1,2}\..*",), exclude=(".*bias",))
    assert PrunableSet.parse("exclude=x") == PrunableSet("all", exclude=("x",))
    for ps in [PrunableSet("bert", exclude=("a,b",)), PrunableSet(None, include=("x",))]:
        assert PrunableSet.parse(ps.to_text()) == ps
        assert PrunableSet.from_dict(ps.to_dict()) == ps
    assert PrunableSet.from_dict({"preset": "cnn", "include": ["a"]}) == PrunableSet("cnn", include=("a",))


@pytest.mark.parametrize("text", ["resnet", "", "all,foo=bar"])
def test_parse_errors(text):
    with pytest.raises(TicketsError) as info:
        PrunableSet.parse(text)
    if text == "resnet":
        for preset in PRESETS:
            assert preset in str(info.value)


def test_bad_preset_and_regex():
    with pytest.raises(TicketsError, match="cnn-all"):
        PrunableSet("convs")
    with pytest.raises(TicketsError, match="regex"):
        PrunableSet("all", include=("(",))
    with pytest.raises(TicketsError, match="unknown prunable-set keys"):
        PrunableSet.from_dict({"preset": "all", "includes": []})


def test_empty_resolution(cnn):
    with pytest.raises(TicketsError, match="selects no parameters"):
        PrunableSet("all", exclude=(".*",)).resolve(cnn)
    with pytest.raises(TicketsError, match="transformer-block stack"):
        PrunableSet("bert").resolve(cnn)


# -- presets: BERT family --------------------------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")

_SIZES = dict(vocab_size=40, max_position_embeddings=24)


def _config(family: str, layers: int, width: int):
    if family == "bert":
        return transformers.BertConfig(
            hidden_size=width, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * width, **_SIZES
        )
    if family == "roberta":
        return transformers.RobertaConfig(
            hidden_size=width, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * width,
            pad_token_id=1, **_SIZES,
        )
    return transformers.DistilBertConfig(dim=width, n_layers=layers, n_heads=2, hidden_dim=2 * width, **_SIZES)


_BLOCK = {
    "bert": ("bert.encoder.layer", ["attention.self.query", "attention.self.key", "attention.self.value",
                                    "attention.output.dense", "intermediate.dense", "output.dense"]),
    "roberta": ("roberta.encoder.layer", ["attention.self.query", "attention.self.key", "attention.self.value",
                                          "attention.output.dense", "intermediate.dense", "output.dense"]),
    "distilbert": ("distilbert.transformer.layer", ["attention.q_lin", "attention.k_lin", "attention.v_lin",
                                                    "attention.out_lin", "ffn.lin1", "ffn.lin2"]),
}


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("head", ["seqcls", "mlm"])
@pytest.mark.parametrize("layers,width", [(2, 8), (3, 12)])
def test_bert_preset_structural(family, head, layers, width):
    auto = transformers.AutoModelForSequenceClassification if head == "seqcls" else transformers.AutoModelForMaskedLM
    torch.manual_seed(0)
    model = auto.from_config(_config(family, layers, width))
    names = PrunableSet("bert").resolve(model)

    prefix, per_layer = _BLOCK[family]
    expected = [f"{prefix}.{i}.{m}.weight" for i in range(layers) for m in per_layer]
    # Only BERT's sequence-classification model has a pooler (BertForMaskedLM is built without one).
    if family == "bert" and head == "seqcls":
        expected.append("bert.pooler.dense.weight")
    assert names == expected
    params = dict(model.named_parameters())
    for n in names:
        assert params[n].dim() == 2
        assert not any(h in n for h in ("embeddings", "LayerNorm", "classifier", "cls.", "lm_head", "pre_classifier"))


def test_bert_preset_bare_model_has_pooler():
    model = transformers.BertModel(_config("bert", 2, 8))
    names = PrunableSet("bert").resolve(model)
    assert len(names) == 6 * 2 + 1 and names[-1] == "pooler.dense.weight"


def test_bert_preset_leaves_out_a_pooler_that_was_not_loaded_pretrained():
    from tickets.masks import preset_notes

    model = transformers.BertModel(_config("bert", 2, 8))
    with_pooler = PrunableSet("bert").resolve(model)
    assert preset_notes("bert", model) == []
    model.pooler_pretrained = True  # a bert-base-style checkpoint: the paper's prunable set
    assert PrunableSet("bert").resolve(model) == with_pooler
    model.pooler_pretrained = None  # "no information" keeps the old behaviour too
    assert PrunableSet("bert").resolve(model) == with_pooler
    model.pooler_pretrained = False
    model.pooler_status = "missing from checkpoint"
    assert PrunableSet("bert").resolve(model) == with_pooler[:-1]
    (note,) = preset_notes("bert", model)
    assert "leaves out pooler.dense.weight" in note and "missing from checkpoint" in note and "include=" in note
    assert preset_notes("all", model) == [] and "pooler.dense.weight" in PrunableSet("all").resolve(model)
    assert PrunableSet.parse(r"bert,include=pooler\.dense\.weight").resolve(model) == with_pooler


# -- Mask ------------------------------------------------------------------------------------------------------------


def _mask(cnn) -> Mask:
    """A mask over conv weights with a known number pruned in each tensor."""
    mask = Mask.ones_like(cnn, PrunableSet("cnn").resolve(cnn))
    mask["body.0.weight"].view(-1)[:10] = False
    mask["seq.weight"].view(-1)[:16] = False  # fully pruned tensor
    return mask


def test_counts_and_report(cnn):
    mask = _mask(cnn)
    total = 4 * 4 * 9 + 16 + 2
    assert (mask.num_total, mask.num_pruned, mask.num_kept) == (total, 26, total - 26)
    assert mask.sparsity == pytest.approx(26 / total) and mask.density == pytest.approx(1 - 26 / total)
    assert mask.per_tensor_sparsity() == {"body.0.weight": 10 / 144, "seq.weight": 1.0, "vol.weight": 0.0}
    assert len(mask) == 3 and "seq.weight" in mask and "fc.weight" not in mask
    assert mask.names == list(mask) == ["body.0.weight", "seq.weight", "vol.weight"]

    report = mask.report(cnn)
    model_total = sum(p.numel() for p in cnn.parameters())
    assert report["prunable"]["total"] == total and report["prunable"]["pruned"] == 26
    assert report["prunable"]["per_tensor"]["seq.weight"] == {
        "shape": [4, 4, 1], "total": 16, "kept": 0, "pruned": 16, "sparsity": 1.0
    }
    assert report["model"]["total"] == model_total and report["model"]["pruned"] == 26
    assert report["model"]["sparsity"] == pytest.approx(26 / model_total)
    assert "prunable set" in report["prunable"]["denominator"]
    assert "all parameters" in report["model"]["denominator"]
    assert mask.report()["model"] is None


def test_apply_and_mask_grads(cnn):
    mask = _mask(cnn)
    before = {n: p.detach().clone() for n, p in cnn.named_parameters()}
    mask.apply_(cnn)
    params = dict(cnn.named_parameters())
    for name, p in params.items():
        assert p.is_leaf and p.grad_fn is None
        if name in mask:
            assert torch.equal(p.detach(), before[name] * mask[name])
        else:
            assert torch.equal(p.detach(), before[name])

    for p in cnn.parameters():
        p.grad = torch.ones_like(p)
    mask.mask_grads_(cnn)
    for name, p in params.items():
        expected = mask[name].float() if name in mask else torch.ones_like(p)
        assert torch.equal(p.grad, expected)


def test_invert_iou_clone(cnn):
    a = _mask(cnn)
    inv = a.invert()
    assert inv.num_kept == a.num_pruned and a.iou(inv) == 0.0 and a.iou(a) == 1.0
    b = a.clone()
    b["vol.weight"][0] = False  # one more pruned weight; clone is independent
    assert a["vol.weight"].all()
    assert a.iou(b) == pytest.approx((a.num_kept - 1) / a.num_kept)
    per = a.per_tensor_iou(b)
    assert per["vol.weight"] == 0.5 and per["body.0.weight"] == 1.0 and per["seq.weight"] == 1.0  # empty ∪ → 1
    assert a.to("cpu").equal(a) and not a.equal(b)
    with pytest.raises(TicketsError, match="different tensors"):
        a.iou(Mask({"x": torch.ones(2, dtype=torch.bool)}))


def test_check_errors(cnn):
    mask = _mask(cnn)
    mask.check(cnn)
    missing = Mask({"layer9.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(TicketsError, match="layer9.weight"):
        missing.check(cnn)
    wrong = Mask({"body.0.weight": torch.ones(4, 4, 5, 5, dtype=torch.bool)})
    with pytest.raises(TicketsError) as info:
        wrong.apply_(cnn)
    msg = str(info.value)
    assert "body.0.weight" in msg and "(4, 4, 5, 5)" in msg and "(4, 4, 3, 3)" in msg and "use the model" in msg
    prefixed = Mask({"module.fc.weight": torch.ones(10, 4, dtype=torch.bool)})
    with pytest.raises(TicketsError, match="module"):
        prefixed.check(cnn)


def test_mask_accepts_01_and_rejects_other_values():
    m = Mask({"w": torch.tensor([0.0, 1.0, 1.0])})
    assert m["w"].dtype == torch.bool and m.num_kept == 2
    with pytest.raises(TicketsError, match="other than 0 and 1"):
        Mask({"w": torch.tensor([0.5, 1.0])})
    with pytest.raises(TicketsError):
        Mask.ones_like(nn.Linear(2, 2), ["nope.weight"])
