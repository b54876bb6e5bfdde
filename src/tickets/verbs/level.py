"""One unit of work: fine-tune a masked model from given start weights, evaluate it, record it — resumably."""

from __future__ import annotations

import sys
import time
from typing import Callable

import torch

from tickets.config import TrainConfig
from tickets.masks import Mask
from tickets.verbs.prepare import Prepared
from tickets.runs import RunDir, write_json
from tickets.training.evaluate import evaluate
from tickets.training.loop import fine_tune


def run_level(
    run: RunDir,
    level: int,
    prepared: Prepared,
    *,
    mask: Mask | None,
    start: dict[str, torch.Tensor],
    train: TrainConfig,
    seed: int,
    device: torch.device,
    limit: int | None,
    progress: bool,
    extra: dict | None = None,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
    evaluate_extra: Callable[[Prepared], dict] | None = None,
) -> dict:
    """Train level ``level`` of ``run`` from ``start`` under ``mask``; write ``metrics.json`` and return it.

    Resumes from the level's epoch checkpoint when one exists. Does not mark the level done: the caller does,
    after writing anything the next level needs.
    """
    model = prepared.model
    prepared.load_weights(start)
    model.to(device)
    if mask is not None:
        mask.check(model)
    resume = run.load_checkpoint(level)
    desc = f"level {level}" if extra is None or "sparsity" not in extra else f"level {level} ({extra['sparsity']:.1%})"
    run.log("level_start", level=level, resumed=resume is not None, **(extra or {}))
    t0 = time.perf_counter()
    result = fine_tune(
        model,
        prepared.task,
        train,
        mask=mask,
        device=device,
        seed=seed,
        limit=limit,
        log=lambda event, **kw: run.log(event, level=level, **kw),
        save_checkpoint=lambda state: run.save_checkpoint(level, state),
        resume=resume,
        on_step=on_step,
        progress=progress,
        desc=desc,
    )
    test = evaluate(model, prepared.task, "test", device=device, batch_size=train.eval_batch_size, limit=limit,
                    mask=mask)
    metrics = {
        "level": level,
        "task": prepared.task.name,
        "primary_metric": prepared.task.primary_metric,
        "val": result.val,
        "test": test,
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "history": result.history,
        "train_seconds": result.seconds,
        "examples_per_second": result.examples_per_second,
        "seed": seed,
        **(extra or {}),
    }
    if mask is not None:
        metrics["sparsity_report"] = mask.report(model)
    if evaluate_extra is not None:
        metrics.update(evaluate_extra(prepared))
    write_json(run.level_dir(level) / "metrics.json", metrics)
    run.log("level_metrics", level=level, test=test, val=result.val, seconds=round(time.perf_counter() - t0, 2))
    score = test.get(prepared.task.primary_metric)
    if progress and score is not None:
        print(f"  {desc}: test {prepared.task.primary_metric} {score:.4f}", file=sys.stderr)
    return metrics
