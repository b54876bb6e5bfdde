"""Run identity: the hashes that name run directories stay put.

Committed results name their run directories (docs/results/cv-study/jobs.json, docs/results/robust-tickets/): a
change to configs, defaults or hashing must not move them, or finished work would be recomputed and studies could
not resume. The literal values below were computed before the config dataclasses generated the CLI (hash format
1); they pin the scheme itself.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from tickets.config import (AdversarialConfig, DataConfig, FindConfig, RobustEvalConfig, ScheduleConfig, TrainConfig,
                            TransferConfig)
from tickets.hparams import hash_view, option
from tickets.masks import Mask
from tickets.models import model_family, model_recipe, planned_model_variant
from tickets.runs import config_hash
from tickets.study.plan import Expander, plan
from tickets.study.spec import load_experiment
from tickets.ticket import Ticket
from tickets.verbs.transfer import resolved_config as transfer_config

REPO = Path(__file__).resolve().parents[1]
GLUE = dict(train=TrainConfig(epochs=2, lr=5e-5, warmup=0.1), data=DataConfig(train_size=2000, limit=872))
ROBUST = dict(train=TrainConfig(epochs=3, adversarial=AdversarialConfig(attack="pgd", eps=2.0, alpha=1.0, steps=3)),
              data=DataConfig(train_size=2000, limit=2000))
ROBUST_EVAL = RobustEvalConfig(attack="pgd", eps=2.0, alpha=0.5, steps=20, limit=500)

FINDS = {
    "find-5b41df142b74": FindConfig(model="resnet20-cifar10", task="cifar10"),
    # minilm-l6 runs moved once, on purpose: the model now reads the sequence by the mean pooling it was trained
    # with instead of its untrained pooler (another computation; the hash records it as model_variant). They were
    # find-eb1c55558db9 and find-ea525f74648f; no committed result used them.
    "find-66e31e682509": FindConfig(model="minilm-l6", task="glue/sst2", schedule=ScheduleConfig(kind="linear",
                                    rate=0.1, levels=5), **GLUE),
    "find-6e2b5564efc3": FindConfig(model="minilm-l6", task="mlm/wikitext-2", schedule=ScheduleConfig(
        kind="linear", rate=0.1, levels=5), train=TrainConfig(epochs=1, lr=1e-4, warmup=0.1),
        data=DataConfig(train_size=640, limit=200)),
    # the robust IMP tickets of docs/results/robust-tickets (seed 1), committed in its source.json
    "find-c89b94be2c4c": FindConfig(model="resnet20-cifar10", task="cifar10", schedule=ScheduleConfig(rate=0.4,
                                    levels=4), robust_eval=ROBUST_EVAL, seed=1, **ROBUST),
    "find-a90cb7fa25b1": FindConfig(model="small-cnn", task="digits-5-9", method="omp", scope="layerwise",
                                    schedule=ScheduleConfig(kind="explicit", sparsities=[0.5, 0.75]),
                                    train=TrainConfig(epochs=1, batch_size=64), data=DataConfig(train_size=300)),
    "find-01c46df49021": FindConfig(model="small-cnn", task="digits-5-9", rewind="step:3",
                                    schedule=ScheduleConfig(kind="explicit", sparsities=[0.5])),
    "find-1ee46147038a": FindConfig(model="resnet20-cifar10", task="cifar10", method="reinit", prunable="cnn-all"),
    # rewind "init" is now spelled "reinit" (both accepted): this one moved when the spellings were unified, and
    # again (was find-59502e084887) when IMP's dense level 0 of a reinit rewind started training from θ0 instead of
    # a random init (2026-11-30): another computation, so another directory
    "find-30a7b7d97c18": FindConfig(model="small-cnn", task="digits-5-9", rewind="init",
                                    schedule=ScheduleConfig(kind="explicit", sparsities=[0.5])),
}
TICKET = Ticket(Mask({"w": torch.tensor([True, False])}), {"checksum": "sha256:" + "ab" * 32})
TRANSFERS = {
    "transfer-cd655ec1a74e": (TransferConfig(model="minilm-l6", task="glue/sst2", **GLUE), None),  # was 6cb2d111f896
    "transfer-1a33406de8b1": (TransferConfig(model="resnet20-cifar10", task="cifar100", train=TrainConfig(epochs=3),
                                             data=DataConfig(train_size=2000, limit=2000)), TICKET),
    "transfer-56fdb144d4dc": (TransferConfig(model="resnet20-cifar10", task="mnist", init="reinit", reverse=True,
                                             save_weights=True), TICKET),
    "transfer-7768832bab64": (TransferConfig(model="resnet20-cifar10", task="fashion-mnist", robust_eval=ROBUST_EVAL,
                                             **ROBUST), None),
}


def _expander() -> Expander:
    return Expander(load_experiment(REPO / "docs" / "results" / "cv-study" / "experiment.yaml"))


@pytest.mark.parametrize("run", sorted(FINDS))
def test_pinned_find_hashes(run):
    assert f"find-{config_hash(_expander().resolved_find(FINDS[run]))}" == run


@pytest.mark.parametrize("run", sorted(TRANSFERS))
def test_pinned_transfer_hashes(run):
    cfg, ticket = TRANSFERS[run]
    config = transfer_config(cfg, cfg.model, cfg.task, model_family(cfg.model), ticket, model_recipe(cfg.model),
                             planned_model_variant(cfg.model))
    assert f"transfer-{config_hash(config)}" == run


def test_committed_cv_study_keeps_its_run_directories(tmp_path):
    """Every find and dense job of the committed CV study predicts the run directory its jobs.json records."""
    exp = load_experiment(REPO / "docs" / "results" / "cv-study" / "experiment.yaml")
    _, jobs = plan(exp, tmp_path)
    recorded = json.loads((REPO / "docs" / "results" / "cv-study" / "jobs.json").read_text())["jobs"]
    runs = {(j["kind"], j["task"], j["method"], j["seed"], j["fraction"]): j["run"] for j in recorded
            if j["kind"] != "transfer"}
    checked = 0
    for job in jobs:
        if job.kind == "transfer":
            continue
        assert job.run.name == runs[(job.kind, job.task, job.method, job.seed, job.fraction)], job.label()
        checked += 1
    assert checked == 20


def test_a_new_field_with_a_default_does_not_move_a_run():
    """The rule that keeps the pins: a field added later (since=2) enters the hash only when it is not default."""
    Extended = dataclasses.make_dataclass(
        "Extended", [("new_knob", float, option(0.5, since=2, help="an option added later"))], bases=(FindConfig,))
    base = FindConfig(model="resnet20-cifar10", task="cifar10")
    same = Extended(model="resnet20-cifar10", task="cifar10")
    moved = Extended(model="resnet20-cifar10", task="cifar10", new_knob=0.7)
    assert config_hash(hash_view(same)) == config_hash(hash_view(base))
    assert config_hash(hash_view(moved)) != config_hash(hash_view(base))
    assert hash_view(moved)["new_knob"] == 0.7


def test_planned_text_runs_match_the_runs_made(shared_data, tmp_path):
    """The dry run's prediction for a minilm-l6 find (registry facts: preset, family, recipe, pooling) is the
    directory the real run uses (model and data loaded)."""
    from tickets.verbs.find import planned_config, resolved_config
    from tickets.verbs.prepare import prepare

    cfg = FINDS["find-66e31e682509"]
    prepared = prepare(cfg.model, cfg.task, data=cfg.data, data_root=shared_data)
    real = resolved_config(cfg, model_id=prepared.model_id, task=prepared.task.name, prunable=prepared.prunable,
                           family=prepared.family, recipe=prepared.recipe, variant=prepared.variant)
    assert config_hash(real) == config_hash(planned_config(cfg))
