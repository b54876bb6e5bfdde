"""Tickets where people already work (issue 13 §1–2): transformers' Trainer with TicketCallback, apply_ticket on any
PreTrainedModel, HFTextModel's loss from labels, and Hub-style ticket folders (save / load / push, offline)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tickets.errors import TicketsError
from tickets.masks import Mask, PrunableSet
from tickets.ticket import Ticket, load_ticket, save_ticket

transformers = pytest.importorskip("transformers")

WORDS = "the a an cat dog sat on mat good bad movie is not very film was great awful".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty Hub cache: nothing leaks in or out


def _config(**kw):
    return transformers.BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=16, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                                   pad_token_id=0, **kw)


def _tiny_text_model(seed=0):
    from tickets.models.hf import hf_spec

    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)})
    return hf_spec(_config(), tok, name="tiny", seed=seed)


def _half_ticket(model, seed=0) -> Mask:
    names = PrunableSet.parse("bert").resolve(model)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(params[n].shape, generator=g) >= 0.5 for n in names})


def _train(model, callbacks, tmp_path, steps=4):
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(len(SPECIAL), len(SPECIAL) + len(WORDS), (32, 8), generator=g)
    ids[:, 0] = 2
    # a text column the model does not take: Trainer's default remove_unused_columns=True must drop it and keep
    # `labels` (found in HFTextModel.forward's signature)
    train = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * 8] * 32,
                                        "labels": (ids[:, 1] % 2).tolist(), "sentence": ["unused"] * 32})
    args = TrainingArguments(str(tmp_path / "trainer"), use_cpu=True, report_to=[], max_steps=steps,
                             per_device_train_batch_size=8, learning_rate=1e-2, weight_decay=0.1, max_grad_norm=1.0,
                             save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=callbacks)
    return trainer.train()


def test_trainer_keeps_a_half_ticket_exactly(tmp_path, capsys):
    from tickets.integrations.hf import TicketCallback

    figures = {}
    for with_ticket in (True, False):
        spec = _tiny_text_model()
        model = spec.module
        mask = _half_ticket(model)
        params = dict(model.named_parameters())
        if not with_ticket:  # the control: the same weights start pruned, but nothing holds them
            mask.apply_(model)
        before = {n: params[n].detach().clone() for n in mask.names}
        callback = TicketCallback(Ticket(mask, {"model": "tiny"}))
        result = _train(model, [callback] if with_ticket else [], tmp_path)
        assert result.global_step == 4 and result.training_loss > 0
        nonzero_pruned = sum(int((params[n][~mask[n]] != 0).sum()) for n in mask.names)
        changed_kept = sum(int((params[n][mask[n]] != before[n][mask[n]]).sum()) for n in mask.names)
        figures["ticket" if with_ticket else "no callback"] = (nonzero_pruned, changed_kept, mask.num_kept,
                                                               mask.num_pruned)
    with capsys.disabled():
        print(f"\nTrainer, 4 AdamW steps (weight decay 0.1), 50% ticket over {figures['ticket'][2] + figures['ticket'][3]}"
              f" prunable weights: (non-zero pruned, changed kept, kept, pruned) = {figures}")
    nonzero, changed, kept, pruned = figures["ticket"]
    assert nonzero == 0
    assert changed == kept  # every kept weight trained
    assert figures["no callback"][0] > 0.9 * pruned  # without the callback AdamW revives them: the test can fail


def test_callback_resolves_prefixes_and_ignores_the_head(tmp_path, caplog):
    """A ticket drawn on a bare BertModel (names without 'bert.') that also covers a 3-label classifier,
    trained on a 2-label BertForSequenceClassification."""
    from tickets.integrations.hf import TicketCallback

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(_config(num_labels=2))
    mask = _half_ticket(model, seed=2)
    bare = {n[len("bert."):]: t for n, t in mask.items()}
    bare["classifier.weight"] = torch.zeros(3, 16, dtype=torch.bool)
    callback = TicketCallback(Mask(bare))
    with caplog.at_level(logging.WARNING, logger="tickets"):
        _train(model, [callback], tmp_path, steps=2)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "'bert.'" in messages or "bert." in messages
    assert callback.mask.names == mask.names  # fitted: bert. added, the head entry dropped
    params = dict(model.named_parameters())
    assert sum(int((params[n][~mask[n]] != 0).sum()) for n in mask.names) == 0
    assert bool((params["classifier.weight"] != 0).all())


def test_apply_ticket_on_any_pretrained_model(tmp_path):
    from tickets.integrations import apply_ticket, model_heads

    torch.manual_seed(0)
    task_model = transformers.BertForSequenceClassification(_config(num_labels=4))
    base = transformers.BertModel(_config())
    assert model_heads(task_model) == ["classifier"] and model_heads(base) == []
    mask = _half_ticket(task_model)
    save_ticket(tmp_path / "t.safetensors", Ticket(mask, {"model": "tiny"}))
    fitted = apply_ticket(task_model, tmp_path / "t.safetensors")
    params = dict(task_model.named_parameters())
    assert fitted.names == mask.names
    assert all(int((params[n][~mask[n]] != 0).sum()) == 0 for n in mask.names)
    # the same file on the bare encoder: 'bert.' removed
    fitted = apply_ticket(base, tmp_path / "t.safetensors")
    assert fitted.names == [n[len("bert."):] for n in mask.names]
    bparams = dict(base.named_parameters())
    assert all(int((bparams[n][~fitted[n]] != 0).sum()) == 0 for n in fitted.names)
    with pytest.raises(TicketsError, match="not a parameter|do not fit"):
        apply_ticket(torch.nn.Linear(3, 3), mask)


def test_text_model_returns_the_loss_for_labels():
    spec = _tiny_text_model()
    for kind, n, labels in (("classification", 3, torch.tensor([0, 2, 1, 2])),
                            ("regression", 1, torch.tensor([0.5, -1.0, 2.0, 0.0]))):
        spec.module.set_head(kind, n, "fresh", seed=0)
        ids = torch.randint(5, 20, (4, 7), generator=torch.Generator().manual_seed(0))
        out = spec.module(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
        ref = (F.cross_entropy(out.logits, labels) if kind == "classification"
               else F.mse_loss(out.logits.squeeze(-1), labels))
        assert torch.allclose(out.loss, ref)
        assert spec.module(input_ids=ids).loss is None
    import inspect

    assert "labels" in inspect.signature(spec.module.forward).parameters


# --------------------------------------------------------------------------------------------------------------
# Hub-style tickets
# --------------------------------------------------------------------------------------------------------------


def _run_dir(tmp_path: Path) -> Path:
    """A find run as `tickets find` lays it out: config.yaml, level-01/{ticket.safetensors, metrics.json}."""
    import yaml

    run = tmp_path / "runs" / "find-abc123"
    (run / "level-01").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "minilm-l6", "task": "glue/sst2",
                                                     "train": {"epochs": 2, "lr": 5e-5},
                                                     "data": {"train_size": 2000}}))
    spec = _tiny_text_model()
    mask = _half_ticket(spec.module)
    meta = {"model": "minilm-l6", "prunable": {"preset": "bert", "include": [], "exclude": []},
            "source_task": "glue/sst2", "method": "imp", "scope": "global", "level": 1, "seed": 7,
            "weights": "theta0", "head_policy": "fresh", "sparsity": mask.sparsity}
    save_ticket(run / "level-01" / "ticket.safetensors", Ticket(mask, meta))
    (run / "level-01" / "metrics.json").write_text(json.dumps({
        "level": 1, "task": "glue/sst2", "primary_metric": "accuracy", "val": {"accuracy": 0.8125, "loss": 0.4},
        "test": {"accuracy": 0.79128, "loss": 0.45}, "seed": 7}))
    return run / "level-01" / "ticket.safetensors"


def test_save_pretrained_writes_ticket_card_and_config(tmp_path):
    path = _run_dir(tmp_path)
    ticket = load_ticket(path)
    ticket.save_pretrained(tmp_path / "hub")
    files = sorted(p.name for p in (tmp_path / "hub").iterdir())
    assert files == ["README.md", "config.json", "ticket.safetensors"]
    assert (tmp_path / "hub" / "ticket.safetensors").read_bytes() == path.read_bytes()  # format unchanged
    card = (tmp_path / "hub" / "README.md").read_text()
    from huggingface_hub import ModelCard

    data = ModelCard.load(tmp_path / "hub" / "README.md").data
    assert data.library_name == "tickets" and data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert "lottery-ticket" in data.tags and "imp" in data.tags and data.datasets in (["nyu-mll/glue"], "nyu-mll/glue")
    for text in ("`minilm-l6`", "`glue/sst2`", "imp, level 1", "over the prunable set (preset `bert`",
                 f"{ticket.mask.sparsity:.4f}", "| seed | 7 |", "test: accuracy 0.7913", "val: accuracy 0.8125",
                 "epochs 2", "train_size 2000", ticket.meta["checksum"]):
        assert text in card, text
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["sparsity"] == pytest.approx(ticket.mask.sparsity) and config["method"] == "imp"

    back = Ticket.from_pretrained(tmp_path / "hub")
    assert back.mask.equal(ticket.mask) and back.meta["checksum"] == ticket.meta["checksum"]
    # a ticket outside a run directory still gets a card, without scores
    Ticket(ticket.mask, {"model": "hf:bert-base-uncased"}).save_pretrained(tmp_path / "bare")
    bare = (tmp_path / "bare" / "README.md").read_text()
    assert "base_model: bert-base-uncased" in bare and "scores" not in bare
    assert "tickets transfer --ticket ticket.safetensors --model hf:bert-base-uncased" in bare
    # a model passed through the Python API (name@digest) cannot be named on the command line: the card says how
    api = Ticket(ticket.mask, {"model": "mlp@d7c2ab2accd5", "weights": "theta0", "method": "imp"})
    api.save_pretrained(tmp_path / "api")
    card = (tmp_path / "api" / "README.md").read_text()
    assert "--model mlp@" not in card and "Python API" in card and "model=spec" in card
    from tickets.ticket import describe

    assert "module passed to the Python API, digest d7c2ab2accd5" in describe(api)


def test_push_to_hub_goes_through_the_mixin_offline(tmp_path, monkeypatch):
    """The upload path with the Hub API mocked: what would be committed is captured, then downloaded back."""
    import shutil

    import huggingface_hub.hub_mixin as hub_mixin

    from tickets.integrations import hub

    uploaded = tmp_path / "uploaded"
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["create_repo"] = (repo_id, private, exist_ok)
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, *, repo_id, folder_path, commit_message, repo_type, **kw):
            calls["upload"] = (repo_id, repo_type, commit_message)
            shutil.copytree(folder_path, uploaded)
            return f"https://hub.invalid/{repo_id}/commit/1"

    monkeypatch.setattr(hub_mixin, "HfApi", FakeApi)
    ticket = load_ticket(_run_dir(tmp_path))
    url = ticket.push_to_hub("someone/sst2-ticket", private=True, token="hf_fake")
    assert url == "https://hub.invalid/someone/sst2-ticket/commit/1"
    assert calls["create_repo"] == ("someone/sst2-ticket", True, True) and calls["token"] == "hf_fake"
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.json", "ticket.safetensors"]
    assert 'Ticket.from_pretrained("someone/sst2-ticket")' in (uploaded / "README.md").read_text()

    def fake_download(repo_id, filename, **kw):
        assert repo_id == "someone/sst2-ticket"
        target = uploaded / filename
        if not target.exists():
            raise FileNotFoundError(filename)
        return str(target)

    monkeypatch.setattr(hub_mixin, "hf_hub_download", fake_download)
    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    back = Ticket.from_pretrained("someone/sst2-ticket", revision="main")
    assert back.mask.equal(ticket.mask) and back.meta["source_task"] == "glue/sst2"


def test_from_pretrained_errors_are_one_line(tmp_path):
    with pytest.raises(TicketsError) as info:
        Ticket.from_pretrained("nobody/no-such-ticket")  # offline, empty cache
    assert "\n" not in str(info.value) and "nobody/no-such-ticket" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TicketsError, match="holds no ticket.safetensors"):
        Ticket.from_pretrained(tmp_path / "empty")
    # a missing folder is "not found", not a malformed Hub id (it said "Repo id must be in the form 'repo_name'")
    for missing in (tmp_path / "nope", "./nope", "runs/find-x/level-03"):
        with pytest.raises(TicketsError, match="not found") as info:
            Ticket.from_pretrained(missing)
        assert "Repo id" not in str(info.value)


def test_mlflow_sink_resumed_level_continues_its_run(tmp_path, monkeypatch):
    """A level killed mid-fine-tune and resumed logs to the same MLflow run, which ends FINISHED (it left a RUNNING
    run with epoch 1 and a second run with the rest); a level run again after it finished gets a new run."""
    mlflow = pytest.importorskip("mlflow")
    from types import SimpleNamespace

    from tickets.training.sinks import MLflowSink

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    run_dir = tmp_path / "find-abc"
    run_dir.mkdir()

    def epoch(sink, step, loss):
        sink.on_epoch_end(SimpleNamespace(step=step, epoch=step // 10 - 1),
                          {"train_loss": loss, "lr": 0.1, "examples_per_second": 50.0, "val": {"accuracy": 0.5}})

    first = MLflowSink(run_dir, 0)
    epoch(first, 10, 2.0)  # then SIGKILL: no finish, the run is never ended
    second = MLflowSink(run_dir, 0)
    epoch(second, 20, 1.5)
    epoch(second, 30, 1.0)
    second.finish({"test": {"accuracy": 0.7}, "sparsity": 0.0})

    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    exp = client.get_experiment_by_name("tickets")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_name for r in runs] == ["find-abc/level-00"]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(10, 2.0), (20, 1.5), (30, 1.0)]
    assert run.data.metrics["test_accuracy"] == 0.7 and run.data.params["sparsity"] == "0.000000"

    again = MLflowSink(run_dir, 0)  # the finished run is not reopened
    assert again.run_id != run.info.run_id
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
