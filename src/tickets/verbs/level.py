"""One unit of work: fine-tune a masked model from given start weights, evaluate it, record it — resumably."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from tickets.config import TrainConfig
from tickets.errors import TicketsError
from tickets.fileio import write_json
from tickets.log import get_logger
from tickets.masks import Mask
from tickets.patterns.base import Pattern
from tickets.runs import RunDir
from tickets.training.callbacks import Callback, CheckpointCallback, LogCallback
from tickets.training.evaluate import evaluate
from tickets.training.loop import fine_tune
from tickets.training.sinks import make_sinks
from tickets.verbs.prepare import Prepared

logger = get_logger(__name__)


def run_level(
    run: RunDir,
    level: int,
    prepared: Prepared,
    *,
    mask: Mask | None,
    start: dict[str, torch.Tensor],
    pattern: Pattern | None = None,
    train: TrainConfig,
    seed: int,
    device: torch.device,
    limit: int | None,
    progress: bool,
    extra: dict | None = None,
    callbacks: Sequence[Callback] = (),
    start_step: int = 0,
    evaluate_extra: Callable[[Prepared, Mask | None], dict] | None = None,
    log_to: Sequence[str] = (),
) -> dict:
    """Train level ``level`` of ``run`` from ``start`` under ``mask``; write ``metrics.json`` and return it.

    ``mask`` covers the prunable set; a structured ``pattern`` expands it to every tensor its groups touch
    (``Pattern.expand``: BatchNorm, biases, …), and that expanded mask is what training and evaluation enforce,
    so the masked model computes what the compacted one would. Sparsity is reported over the prunable set, plus
    the pattern's own unit (channels, heads, …).

    ``train`` is the resolved training config. ``callbacks`` join the level's own (the run's JSONL log and
    epoch checkpoints). Resumes from the level's epoch checkpoint when one exists. ``start_step`` > 0 starts at
    that step of the schedule (IMP rewinding). ``log_to`` names logging sinks (``training/sinks.py``) that receive
    every epoch and the final metrics. Does not mark the level done: the caller does, after writing
    anything the next level needs.
    """
    model = prepared.model
    prepared.load_weights(start)
    model.to(device)
    enforced = mask
    if mask is not None:
        mask.check(model)
        if pattern is not None:
            enforced = pattern.expand(mask, model)
    resume = run.load_checkpoint(level)
    desc = f"level {level}" if extra is None or "sparsity" not in extra else f"level {level} ({extra['sparsity']:.1%})"
    run.log("level_start", level=level, resumed=resume is not None, start_step=start_step, **(extra or {}))
    t0 = time.perf_counter()
    sinks = make_sinks(log_to, run.path, level)
    own: list[Callback] = [LogCallback(lambda event, **kw: run.log(event, level=level, **kw)), *callbacks, *sinks]
    checkpoint = CheckpointCallback(lambda state: run.save_checkpoint(level, state), own)
    result = fine_tune(model, prepared.task, train, mask=enforced, device=device, seed=seed, limit=limit,
                       callbacks=[*own, checkpoint], resume=resume, start_step=start_step, progress=progress,
                       desc=desc, family=prepared.family, recipe=prepared.recipe)
    test = evaluate(model, prepared.task, "test", device=device, batch_size=train.eval_batch_size, limit=limit,
                    mask=enforced)
    from tickets.diagnostics import degenerate_predictions

    verdict = degenerate_predictions(test.get("predicted"), names=prepared.task.info.get("label_names")
                                     or prepared.task.info.get("classes"))
    if verdict:
        test = {**test, "degenerate": verdict}
        logger.warning("  %s: %s", desc, verdict)
        run.log("degenerate", level=level, message=verdict)
    if not test.get("examples"):
        raise TicketsError(f"the test split of {prepared.task.name!r} is empty, so there is nothing to score: check "
                           "its data files (GLUE: dev.tsv) and --limit")
    metrics = {
        "level": level,
        "task": prepared.task.name,
        "primary_metric": prepared.task.primary_metric,
        "val": result.val,
        "test": test,
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "start_step": start_step,
        "history": result.history,
        "train_seconds": result.seconds,
        "examples_per_second": result.examples_per_second,
        "seed": seed,
        **(extra or {}),
    }
    if mask is not None:
        metrics["sparsity_report"] = mask.report(model)
        if pattern is not None and pattern.name != "unstructured":
            metrics["pattern_report"] = pattern.group_report(mask)
    if evaluate_extra is not None:
        metrics.update(evaluate_extra(prepared, enforced))
    write_json(run.level_dir(level) / "metrics.json", metrics)
    for sink in sinks:
        sink.finish(metrics)
    run.log("level_metrics", level=level, test=test, val=result.val, seconds=round(time.perf_counter() - t0, 2))
    score = test.get(prepared.task.primary_metric)
    if score is not None:
        logger.info("  %s: test %s %.4f", desc, prepared.task.primary_metric, score)
    return metrics
