"""Smoke test of benchmarks/compaction.py --quick on the small CNN (no weights or data needed). No timing is
asserted (speed belongs in the benchmark's output); FLOPs are checked against a hand count of the convolutions."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "compaction.py"


def _bench():
    spec = importlib.util.spec_from_file_location("compaction_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _hand_flops(model: nn.Module, x: torch.Tensor) -> int:
    """2 × multiply-adds of every conv and linear layer, from their shapes (an independent count)."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            total += 2 * out.numel() * k
        elif isinstance(m, nn.Linear):
            total += 2 * out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def test_quick_benchmark_on_small_cnn(tmp_path, capsys):
    pytest.importorskip("torch_pruning")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    bench = _bench()
    threads = torch.get_num_threads()
    try:
        result = bench.main(["--quick", "--models", "small-cnn", "--rounds", "2", "--min-time", "0",
                             "--json", str(tmp_path / "c.json"), "--md", str(tmp_path / "c.md")])
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "c.json").read_text()) == json.loads(json.dumps(result))
    out = capsys.readouterr().out
    assert "| small-cnn | channel |" in out and (tmp_path / "c.md").read_text().strip() in out
    recs = result["records"]
    settings = {(r["engine"], r["batch"], r["threads"]) for r in recs}
    assert settings == {(e, b, 1) for e in ("eager", "onnxruntime") for b in (1, 8)}
    by = {(r["variant"], r["pattern"]): r for r in recs if (r["engine"], r["batch"]) == ("eager", 8)}
    assert set(by) == {("dense", None), ("masked", "channel"), ("compact", "channel"), ("masked", "unstructured")}
    dense, masked, small = by[("dense", None)], by[("masked", "channel")], by[("compact", "channel")]

    from tickets.models import load_model

    spec = load_model("small-cnn")
    assert dense["flops"] == _hand_flops(spec.module, torch.rand(1, 1, 8, 8))
    assert masked["flops"] == dense["flops"] and masked["params"] == dense["params"]  # zeros cost the same
    assert small["flops"] < dense["flops"] and small["flops_reduction"] == pytest.approx(dense["flops"] / small["flops"])
    assert small["params"] < dense["params"] and small["params_ratio"] < 1
    assert 0.4 < small["sparsity"] < 0.6 and small["groups"]["unit"] == "channels"
    assert small["max_abs_diff_vs_masked"] <= 1e-4  # the compact model computes what the masked one does
    assert all(r["onnx_max_abs_diff"] <= 1e-4 for r in recs if r["engine"] == "onnxruntime")
    for r in recs:
        assert r["latency_ms"] > 0 and r["speedup_vs_dense"] > 0 and len(r["latency_iqr_ms"]) == 2
    assert by[("dense", None)]["speedup_vs_dense"] == pytest.approx(1.0)
    assert "speedup_vs_masked" in small and "efficiency" in small
    assert small["efficiency"] == pytest.approx(small["speedup_vs_dense"] / small["flops_reduction"])
    nm = result["nm"]
    assert nm["cuda_available"] == torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert "cpu" in nm["cpu"].lower() and "no CUDA GPU" in nm["gpu"]


def test_bad_arguments():
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "resnet21"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--engines", "tvm"])
    args = bench.parse_args(["--quick"])
    assert args.models == ["resnet20-cifar10"] and args.rounds == 3 and args.threads == [1]
