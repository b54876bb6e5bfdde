"""Configs (validation, YAML, hashing) and run directories (atomic writes, log, checkpoints)."""


import pytest
import torch

from tickets.config import FindConfig, TrainConfig, from_dict, load_yaml, merge, resolve_train, to_dict
from tickets.errors import TicketsError
from tickets.runs import RunDir, atomic_write_text, config_hash
from tickets.training.loop import lr_factor


def test_unknown_key_is_named_with_valid_keys():
    with pytest.raises(TicketsError, match=r"unknown key 'epoch' in cfg.train: valid keys are .*epochs"):
        from_dict(FindConfig, {"model": "m", "task": "t", "train": {"epoch": 3}}, "cfg")


def test_types_are_checked_and_ints_become_floats():
    cfg = from_dict(FindConfig, {"model": "m", "task": "t", "train": {"lr": 1, "epochs": 2}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    with pytest.raises(TicketsError, match="train.epochs must be an integer"):
        from_dict(FindConfig, {"train": {"epochs": "many"}})


def test_yaml_and_override_merge(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: resnet20-cifar10\ntask: cifar10\ntrain:\n  epochs: 5\n  lr: 0.1\n")
    merged = merge(load_yaml(f), {"train": {"epochs": 1}})
    cfg = from_dict(FindConfig, merged)
    assert (cfg.train.epochs, cfg.train.lr, cfg.model) == (1, 0.1, "resnet20-cifar10")


def test_bad_yaml_names_the_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: a\ntrain: [1, 2\n")
    with pytest.raises(TicketsError, match="line"):
        load_yaml(f)


def test_family_defaults_resolve():
    assert resolve_train(TrainConfig(), "cnn").optimizer == "sgd"
    bert = resolve_train(TrainConfig(), "bert")
    assert (bert.optimizer, bert.lr, bert.batch_size) == ("adamw", 2e-5, 32)
    assert resolve_train(TrainConfig(lr=0.5), "bert").lr == 0.5


def test_hash_is_stable_and_sensitive():
    a = to_dict(FindConfig(model="m", task="t"))
    b = to_dict(FindConfig(model="m", task="t"))
    assert config_hash(a) == config_hash(b)
    b["seed"] = 1
    assert config_hash(a) != config_hash(b)


def test_rundir_resume_and_conflict(tmp_path):
    run = RunDir(tmp_path, "find", {"a": 1})
    again = RunDir(tmp_path, "find", {"a": 1})
    assert run.path == again.path
    run.log("x", value=1)
    run.log("y", value=2)
    with open(run.path / "log.jsonl", "a") as fh:
        fh.write('{"cut": ')  # a line cut by a crash is ignored
    assert [e["event"] for e in run.events()] == ["x", "y"]
    (run.path / "config.yaml").write_text("a: 2\n")
    with pytest.raises(TicketsError, match="different config"):
        RunDir(tmp_path, "find", {"a": 1})


def test_checkpoint_roundtrip_uses_weights_only(tmp_path):
    run = RunDir(tmp_path, "find", {"a": 1})
    assert run.load_checkpoint(0) is None
    run.save_checkpoint(0, {"model": {"w": torch.ones(2)}, "epoch": 3, "history": [{"val": {"accuracy": 0.5}}]})
    state = run.load_checkpoint(0)
    assert state["epoch"] == 3 and torch.equal(state["model"]["w"], torch.ones(2))
    run.checkpoint_path(0).write_bytes(b"garbage")
    assert run.load_checkpoint(0) is None  # unreadable checkpoint: the level restarts, nothing crashes


def test_atomic_write_leaves_no_temp_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    from tickets.runs import atomic_write

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "linear"])
def test_lr_schedules_with_warmup(schedule):
    cfg = resolve_train(TrainConfig(lr_schedule=schedule, warmup=0.1), "cnn")
    factors = [lr_factor(s, 100, cfg) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(0 <= f <= 1 for f in factors)
    if schedule == "cosine":
        assert factors[-1] < 0.01
    if schedule == "step":
        assert factors[-1] == pytest.approx(0.01)


def test_a_recipe_fills_only_options_left_unset():
    """minilm-l6's recipe says lr 1e-4, warm-up 0.1: it fills unset options only; an explicit --warmup 0 (equal to
    the family default) stays 0 — it used to be overwritten with 0.1."""
    recipe = {"lr": 1e-4, "warmup": 0.1}
    unset = resolve_train(TrainConfig(), "transformer", recipe)
    assert (unset.lr, unset.warmup) == (1e-4, 0.1)
    explicit = resolve_train(TrainConfig(warmup=0.0, lr=2e-5), "transformer", recipe)
    assert (explicit.lr, explicit.warmup) == (2e-5, 0.0)
    assert resolve_train(TrainConfig(), "cnn").warmup == 0.0  # no recipe: the family default

    from types import SimpleNamespace

    from tickets.verbs.prepare import Prepared

    fake = SimpleNamespace(model_id="minilm-l6", recipe=recipe,
                           spec=SimpleNamespace(info={"recipe_reason": "why"}, pretrained_task=None))
    lines = Prepared.notes(fake, TrainConfig(warmup=0.0))
    assert lines == ["minilm-l6 declares its training recipe (lr 0.0001) for options you did not set: why"]
    assert Prepared.notes(fake, TrainConfig(warmup=0.0, lr=3e-5)) == []


@pytest.mark.parametrize("data, key, words", [
    ({"epochs": 1}, ("epochs",), ["did you mean train.epochs?", "train: {epochs: ...}"]),
    ({"batch-size": 8}, ("batch-size",), ["did you mean train.batch_size?"]),
    ({"adv_eps": 2}, ("adv_eps",), ["did you mean train.adversarial.eps?"]),
    ({"eps": 2}, ("eps",), ["did you mean robust_eval.eps or train.adversarial.eps?"]),  # --eps is robust_eval's
    ({"robust_limit": 5}, ("robust_limit",), ["did you mean robust_eval.limit?"]),
    ({"lvels": 5}, ("lvels",), ["did you mean schedule.levels?"]),
    ({"train": {"rate": 0.2}}, ("train", "rate"), ["in train", "did you mean schedule.rate?"]),
    ({"train": {"batch-size": 8}}, ("train", "batch-size"), ["did you mean train.batch_size?", "underscores"]),
    ({"train": {"epochs": "two"}}, ("train", "epochs"), ["train.epochs must be an integer"]),
    ({"schedule": {"sparsities": [0.2, 1.5]}}, ("schedule", "sparsities", 1), ["must be in [0, 1)"]),
    ({"schedule": {"sparsities": []}}, ("schedule", "sparsities"), ["empty list"]),
    ({"prunable": " "}, ("prunable",), ["prunable is empty"]),
    ({"train": {"adversarial": {"eps": -1}}}, ("train", "adversarial", "eps"), ["train.adversarial.eps", ">= 0"]),
])
def test_config_errors_carry_the_key_path_and_say_where_a_key_belongs(data, key, words):
    """The key path lets `--config` errors cite the file's line; an unknown key that is an option of another
    block (a flag name written flat) says where it belongs."""
    from tickets.hparams import ConfigError

    with pytest.raises(ConfigError) as err:
        from_dict(FindConfig, {"model": "m", "task": "t", **data}, "")
    assert err.value.key == key
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_validate_names_the_key_path_of_a_built_config():
    from tickets.hparams import ConfigError, validate

    cfg = FindConfig(model="m", task="t")
    cfg.train.epochs = 0
    with pytest.raises(ConfigError) as err:
        validate(cfg, "")
    assert err.value.key == ("train", "epochs") and "train.epochs must be >= 1" in str(err.value)


def test_cli_list_text_must_list_a_number():
    from tickets.config import _floats

    assert _floats("0.2, 0.5,") == [0.2, 0.5]
    for text in ("", ",", " , "):
        with pytest.raises(TicketsError, match="no number"):
            _floats(text)
