"""Diagnostics: near-empty tensors, mixed magnitude scales, degenerate predictions; prediction counts in metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tickets.diagnostics import degenerate_predictions, sparsity_warnings, tensor_scale
from tickets.masks import Mask
from tickets.pruning import magnitude_prune


def _minilm_like(seed=0):
    """Four encoder-like tensors (std 0.095) and a pooler-like one (std 0.009), the scales MiniLM-L6 ships."""
    g = torch.Generator().manual_seed(seed)
    scores = {f"encoder.{i}.weight": torch.randn(96, 96, generator=g) * 0.095 for i in range(4)}
    scores["pooler.dense.weight"] = torch.randn(96, 96, generator=g) * 0.009
    return scores


def test_global_magnitude_pruning_empties_the_small_tensor_and_is_flagged():
    scores = _minilm_like()
    mask = magnitude_prune(scores, Mask({n: torch.ones_like(t, dtype=torch.bool) for n, t in scores.items()}), 0.5)
    per = mask.per_tensor_sparsity()
    assert per["pooler.dense.weight"] >= 0.99 and max(v for n, v in per.items() if "encoder" in n) < 0.5
    lines = sparsity_warnings(mask, scores)
    assert len(lines) == 2
    kept = int(mask["pooler.dense.weight"].sum())
    assert lines[0].startswith("tensor pooler.dense.weight is pruned to ")
    assert f"({kept:,} of 9,216 weights kept)" in lines[0]
    assert r"exclude=pooler\.dense\.weight" in lines[0] and "--scope layerwise" in lines[0]
    assert "normalised score" in lines[0]
    assert "mixes magnitude scales" in lines[1] and r"exclude=pooler\.dense\.weight)" in lines[1]
    assert not any(f"encoder.{i}.weight" in lines[1] for i in range(4))  # only the outlier is named
    # layer-wise pruning to the same sparsity leaves no tensor empty; the scale line stays (it is about the set)
    layerwise = magnitude_prune(scores, Mask({n: torch.ones_like(t, dtype=torch.bool) for n, t in scores.items()}),
                                0.5, scope="layerwise")
    assert sparsity_warnings(layerwise) == []
    assert len(sparsity_warnings(layerwise, scores)) == 1


def test_sparsity_threshold_is_inclusive_and_counts_are_exact():
    t = torch.ones(1000, dtype=torch.bool)
    at = t.clone()
    at[:990] = False  # exactly 99.0%
    below = t.clone()
    below[:989] = False  # 98.9%
    allgone = torch.zeros(7, 3, dtype=torch.bool)
    lines = sparsity_warnings({"a": at, "b": below, "c": allgone, "empty": torch.ones(0, dtype=torch.bool)})
    assert len(lines) == 2
    assert "tensor a is pruned to 99.00% (10 of 1,000 weights kept)" in lines[0]
    assert "tensor c is pruned to 100.00% (0 of 21 weights kept)" in lines[1]
    big = torch.ones(100_000, dtype=torch.bool)
    big[:-1] = False
    (line,) = sparsity_warnings({"big": big})
    assert "> 99.99%" in line and "(1 of 100,000 weights kept)" in line  # never rounded up to 100%
    assert sparsity_warnings({"a": at}, threshold=0.995) == []
    with pytest.raises(ValueError):
        sparsity_warnings({"a": at}, threshold=0.0)
    with pytest.raises(ValueError):
        sparsity_warnings({"a": at}, scale_ratio=1.0)


def test_scale_warning_ratio_and_outliers():
    ones = {n: torch.ones(4, 4, dtype=torch.bool) for n in ("a", "b", "c")}
    same = {"a": torch.full((4, 4), 0.1), "b": torch.full((4, 4), -0.1), "c": torch.full((4, 4), 0.1)}
    assert sparsity_warnings(ones, same) == []
    close = {**same, "c": torch.full((4, 4), 0.39)}  # 3.9x: below the 4x default (ResNet-20 spans 3.0x)
    assert sparsity_warnings(ones, close) == []
    far = {**same, "c": torch.full((4, 4), 0.41)}  # 4.1x: flagged, c named
    (line,) = sparsity_warnings(ones, far)
    assert "4.1× apart" in line and "c (0.41" in line and "a (" not in line and "b (" not in line
    # two groups, none far from the (geometric) median: the extremes are named
    two = {"a": torch.full((4, 4), 0.1), "b": torch.full((4, 4), 0.2), "c": torch.full((4, 4), 0.35)}
    (line,) = sparsity_warnings(ones, two, scale_ratio=3.0)
    assert "a (0.1" in line and "c (0.35" in line
    # pruned positions (exact zeros) do not shrink a tensor's scale; names outside the mask are ignored
    pruned = {"a": torch.tensor([0.0, 0.0, 0.1, -0.1]), "b": torch.full((4,), 0.1), "x": torch.full((4,), 9.0)}
    assert tensor_scale(pruned["a"]) == pytest.approx(0.1)
    assert sparsity_warnings({"a": torch.ones(4, dtype=torch.bool), "b": torch.ones(4, dtype=torch.bool)},
                             pruned) == []


def test_degenerate_predictions():
    line = degenerate_predictions([0, 872], names=["negative", "positive"])
    assert line.startswith("degenerate predictions: all 872 evaluated examples predicted as class 1 (positive)")
    assert "100.00%" in line
    assert degenerate_predictions([428, 444]) is None  # SST-2 dev's own class balance: not degenerate
    almost = degenerate_predictions([10, 862])
    assert almost is not None and "862 of 872" in almost and "98.85%" in almost
    assert degenerate_predictions([50, 950]) is not None and degenerate_predictions([51, 949]) is None  # 95%
    assert degenerate_predictions([51, 949], share=0.9) is not None
    assert degenerate_predictions({"cat": 3, "dog": 97}).startswith("degenerate predictions: 97 of 100")
    assert degenerate_predictions(None) is None and degenerate_predictions([]) is None
    assert degenerate_predictions([0, 0]) is None and degenerate_predictions([5]) is None
    with pytest.raises(ValueError):
        degenerate_predictions([1, -1])
    with pytest.raises(ValueError):
        degenerate_predictions([1, 2], share=0.5)


def test_metrics_record_prediction_counts():
    from tickets.tasks.glue import GlueMetric
    from tickets.tasks.images import Accuracy

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 3, generator=g)
    logits[:, 2] -= 10  # class 2 never predicted: still counted (as 0)
    y = torch.randint(0, 3, (50,), generator=g)
    ref = np.bincount(logits.argmax(1).numpy(), minlength=3).tolist()
    acc = Accuracy()
    for s in range(0, 50, 16):
        acc.update(logits[s:s + 16], {"y": y[s:s + 16]})
    out = acc.compute()
    assert out["predicted"] == ref and ref[2] == 0 and sum(ref) == 50
    assert out["accuracy"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    glue = GlueMetric("mcc")
    for s in range(0, 50, 16):
        glue.update(logits[s:s + 16], {"labels": y[s:s + 16]})
    assert glue.compute()["predicted"] == ref
    assert degenerate_predictions(out["predicted"]) is None
    const = Accuracy()
    const.update(torch.tensor([[0.0, 1.0]]).repeat(20, 1), {"y": torch.arange(20) % 2})
    assert const.compute()["predicted"] == [0, 20] and degenerate_predictions(const.compute()["predicted"])
    assert "predicted" not in Accuracy().compute() and "predicted" not in GlueMetric("f1").compute()
    reg = GlueMetric("corr")
    reg.update(torch.randn(4, 1, generator=g), {"labels": torch.rand(4, generator=g)})
    assert "predicted" not in reg.compute()  # regression: no classes


class _TwoScales(torch.nn.Module):
    """Two convolutions whose weights are 20× apart in scale (the second is the small one)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = torch.nn.Linear(8, 10)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.randn(self.conv1.weight.shape, generator=g))
            self.conv2.weight.copy_(torch.randn(self.conv2.weight.shape, generator=g) * 0.05)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("pattern,scope,warned", [("unstructured", "global", True),
                                                  ("unstructured", "layerwise", False),
                                                  ("nm:2:4", "global", False)])
def test_find_warns_about_mixed_scales_only_when_one_ranking_compares_tensors(tmp_path, pattern, scope, warned):
    import tickets
    from tickets import DataConfig, FindConfig, ScheduleConfig, TrainConfig

    spec = tickets.from_module(_TwoScales(), name="two-scales", head="fc", input_size=8, in_channels=1,
                               prunable_preset="cnn-all")
    schedule = ScheduleConfig() if pattern.startswith("nm") else ScheduleConfig(kind="explicit", sparsities=[0.5])
    cfg = FindConfig(model="two-scales", task="digits-5-9", method="omp", pattern=pattern, scope=scope,
                     schedule=schedule, train=TrainConfig(epochs=1, batch_size=64, max_steps=2),
                     data=DataConfig(train_size=128, limit=64))
    res = tickets.find_tickets(cfg, model=spec, out=tmp_path, device="cpu", progress=False)
    events = [json.loads(line) for line in (res.path / "log.jsonl").read_text().splitlines()]
    messages = [e["message"] for e in events if e.get("event") == "warning"]
    assert any("mixes magnitude scales" in m and "conv2.weight" in m for m in messages) == warned, messages


def test_unit_warnings_name_layers_a_global_ranking_emptied():
    from tickets.diagnostics import unit_warnings

    report = {"unit": "channels", "total": 96, "kept": 68, "per_layer": {
        "layer1.0.conv1.weight": {"kept": 1, "total": 16}, "layer2.0.conv1.weight": {"kept": 30, "total": 32},
        "layer3.0.conv1.weight": {"kept": 37, "total": 48}}}
    (line,) = unit_warnings(report)
    assert line.startswith("layer1.0.conv1.weight keeps 1 of 16 channels, while the ticket keeps 70.83% of its channels")
    assert "layer2" not in line and "--scope layerwise" in line
    # an empty layer is named even at high sparsity; an even spread never is
    assert unit_warnings({**report, "kept": 10, "per_layer": {"a": {"kept": 0, "total": 8}, "b": {"kept": 10,
                                                                                                   "total": 88}}})
    even = {"unit": "heads", "total": 24, "kept": 6, "per_layer": {f"l{i}": {"kept": 1, "total": 4} for i in range(6)}}
    assert unit_warnings(even) == [] and unit_warnings({"unit": "weights", "total": 10, "kept": 1}) == []


@pytest.mark.parametrize("scope,warned", [("global", True), ("layerwise", False)])
def test_find_warns_when_channel_pruning_empties_a_layer(shared_data, shared_models, tmp_path, capsys, scope, warned):
    """A user's ResNet-20 at 20% channel sparsity with the global scope kept 1 of 16 channels in layer1's convs
    (accuracy 0.72 → 0.13), and only a generic scale warning was printed."""
    from tickets.cli import main

    argv = ["find", "--model", "resnet20-cifar10", "--task", "cifar10", "--method", "omp", "--pattern", "channel",
            "--scope", scope, "--sparsities", "0.2", "--epochs", "1", "--max-steps", "1", "--train-size", "64",
            "--limit", "32", "--device", "cpu", "--quiet", "--out", str(tmp_path), "--data-root", str(shared_data),
            "--model-root", str(shared_models)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    (log,) = tmp_path.glob("find-*/log.jsonl")
    messages = [e.get("message", "") for e in map(json.loads, log.read_text().splitlines())]
    logged = [m for m in messages if "one ranking across layers emptied" in m]
    assert bool(logged) == warned, messages
    if warned:
        assert "layer1.0.conv1.weight keeps 1 of 16" in logged[0] and logged[0] in err


def test_shortfall_warning_when_a_pattern_cannot_reach_the_sparsity():
    from tickets.diagnostics import shortfall_warning

    line = shortfall_warning(0.9, 0.3056, "head")
    assert line and "asked for 90.00%" in line and "head pattern reached 30.56%" in line and "head+neuron" in line
    assert shortfall_warning(0.2, 0.19, "channel") is None  # group granularity: close enough
    assert shortfall_warning(0.5, 0.47, "channel") is None and shortfall_warning(0.5, 0.44, "channel")


def test_notes_say_when_validation_comes_from_the_shipped_weights_training_split(shared_data, shared_models):
    """ResNet-20 CIFAR-10 on cifar10: validation accuracy 0.98 against 0.89 on test (a newcomer), because the
    validation split is carved from the images the shipped weights were trained on."""
    from tickets.tasks.base import DataConfig
    from tickets.verbs.prepare import prepare

    data = DataConfig(train_size=64, limit=16)
    same = prepare("resnet20-cifar10", "cifar10", data=data, data_root=shared_data, model_root=shared_models)
    assert any("trained on, so validation scores run high" in n for n in same.notes())
    other = prepare("resnet20-cifar10", "mnist", data=data, data_root=shared_data, model_root=shared_models)
    assert not any("validation scores run high" in n for n in other.notes())
