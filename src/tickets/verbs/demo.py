"""`tickets demo`: the whole pipeline on scikit-learn's bundled digits — no download, a few minutes on a CPU.

1. Pre-train a small CNN on digits 0–4 (this is θ0, the "pre-trained model").
2. Draw IMP, OMP and random-pruning tickets for the downstream task digits 5–9 over 8 sparsity levels.
3. Write report.md with an accuracy-vs-sparsity plot.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from tickets.config import FindConfig, ScheduleConfig, TrainConfig
from tickets.verbs.find import find_tickets
from tickets.models import load_model
from tickets.verbs.prepare import prepare
from tickets.runs import atomic_write, atomic_write_text
from tickets.tasks.base import DataConfig
from tickets.training.loop import fine_tune
from tickets.log import get_logger
from tickets.runtime import resolve_device

logger = get_logger(__name__)

PRETRAIN = TrainConfig(epochs=20, batch_size=64, optimizer="adamw", lr=3e-3, weight_decay=1e-4, lr_schedule="cosine")
FINETUNE = TrainConfig(epochs=10, batch_size=64, optimizer="adamw", lr=3e-3, weight_decay=1e-4, lr_schedule="cosine")
SCHEDULE = ScheduleConfig(kind="geometric", rate=0.3, levels=8)
METHODS = ("imp", "omp", "random")


def pretrained_model(out: Path, seed: int, device, progress: bool):
    """θ0: the small CNN trained on digits 0–4, cached in ``out/pretrained.safetensors``."""
    from safetensors.torch import load_file, save_file

    spec = load_model("small-cnn", pretrained=False)
    path = out / "pretrained.safetensors"
    prepared = prepare(spec, "digits-0-4", head="fresh", seed=seed, data=DataConfig())
    if path.exists():
        spec.module.load_state_dict(load_file(str(path)))
    else:
        logger.info("pre-training small-cnn on digits 0-4 ...")
        fine_tune(spec.module, prepared.task, PRETRAIN, device=device, seed=seed, progress=progress,
                  desc="pre-train")
        state = {k: v.detach().cpu().contiguous() for k, v in spec.module.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, str(tmp)))
    spec.module.cpu()
    spec.name = "small-cnn-digits04"
    spec.pretrained_task = "digits-0-4"
    return spec


def run_demo(out: str | Path = "tickets-demo", seed: int = 0, device: str = "auto", progress: bool = True) -> Path:
    """Run the demo into ``out`` (resumable) and return the path of report.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # the demo CNN is tiny: extra intra-op threads only add overhead

    started = time.perf_counter()
    spec = pretrained_model(out, seed, device, progress)
    results = {}
    for method in METHODS:
        cfg = FindConfig(model=spec.name, task="digits-5-9", method=method, schedule=SCHEDULE, seed=seed,
                         train=FINETUNE, data=DataConfig())
        results[method] = find_tickets(cfg, out=out / "runs", device=device, progress=progress, model=spec)
    seconds = time.perf_counter() - started
    return write_report(out, results, seconds)


def write_report(out: Path, results: dict, seconds: float) -> Path:
    """Write ``out/report.md`` and its accuracy-vs-sparsity plot from the find ``results`` (method → FindResult)."""
    from tickets.study.report import markdown_table, plot_sparsity_curves  # here: study sits above verbs

    imp = results["imp"].levels
    metric = imp[0]["primary_metric"]
    dense = imp[0]["test"][metric]
    series = {m: [(r["sparsity"], r["test"][metric], 0.0) for r in res.levels if r["sparsity"] > 0]
              for m, res in results.items()}
    png = plot_sparsity_curves(series, out / "accuracy_vs_sparsity.png", dense=(dense, 0.0), ylabel=f"test {metric}",
                               title="digits 5-9, small CNN pre-trained on digits 0-4 (one seed)")
    by_level = {m: {round(r["sparsity"], 4): r["test"][metric] for r in res.levels} for m, res in results.items()}
    sparsities = sorted({s for m in by_level.values() for s in m if s > 0})
    rows = [[f"{s:.1%}"] + [by_level[m].get(s, "") for m in results] for s in sparsities]
    table = markdown_table(["sparsity"] + [f"{m} {metric}" for m in results], rows)
    best = max((s for s in sparsities if by_level["imp"].get(s, -1) >= dense), default=None)
    lines = [
        "# tickets demo: lottery tickets in a pre-trained CNN",
        "",
        "θ0 is a small CNN pre-trained on scikit-learn digits 0–4. Tickets for the downstream task digits 5–9 are "
        "drawn by IMP (fine-tune, prune 30% of the remaining weights, rewind survivors to θ0), one-shot magnitude "
        "pruning of θ0 (OMP) and random pruning, then fine-tuned under their masks. Sparsity is over the prunable "
        "set: every conv weight except the stem (preset `cnn`); the classifier is not pruned. Scores are test "
        f"{metric} on a held-out 20% of digits 5–9, one seed (0), so differences of a few points are noise.",
        "",
        f"Dense fine-tuned θ0: **{dense:.4f}**. Highest IMP sparsity at or above dense: "
        f"**{'none' if best is None else f'{best:.1%}'}**.",
        "",
        "![accuracy vs sparsity](accuracy_vs_sparsity.png)",
        "",
        table,
        "",
        f"Runs: {', '.join(f'`{r.path.relative_to(out)}`' for r in results.values())}. "
        f"Wall time: {seconds:.1f} s.",
        "",
    ]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    assert png.exists()
    return report
