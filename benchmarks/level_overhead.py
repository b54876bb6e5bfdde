"""Where the CPU of a ticket level goes: forward/backward/optimizer versus everything else, now and before issue 11.

    python benchmarks/level_overhead.py [--models resnet20,minilm] [--rounds 10] [--epochs 2]

Runs real levels with ``tickets.verbs.level.run_level`` (the code ``tickets find`` runs per level: masked
fine-tune with per-epoch validation and epoch checkpoints in a run directory, then the test evaluation and
``metrics.json``) at ``--sparsity`` (magnitude mask of θ0), one thread, and splits the level's CPU time into:

* ``core``: forward, loss, backward, gradient clipping and the optimizer step (timed from a callback's
  ``on_batch`` to ``after_optimizer_step``, mask work taken out);
* ``mask``: ``Mask.mask_grads_`` / ``apply_`` during training; ``eval``: validation and test evaluation;
  ``checkpoint``: building, packing and writing epoch checkpoints; ``other``: the rest (batching and
  augmentation, logging, setup).

Two variants, interleaved round by round: ``now`` (the project's code) and ``before`` (the same level with the
pieces issue 11 replaced put back: ``masked_fill_`` masks, plain 256-example evaluation batches, unpacked
checkpoints). Prints each share's median and spread over the rounds, and the per-round ratio of level CPU
before / now. ResNet-20: CIFAR-10, ``--train-size 2000`` (1,800 to train, 200 to validate), test on the first
``--limit`` test images; MiniLM-L6: SST-2, ``--text-train-size 320``, test on GLUE dev (872).
"""

from __future__ import annotations

import statistics
import tempfile

from _timing import (cpu_seconds, describe, interleave, legacy_apply_, legacy_mask_grads_, magnitude_mask, parser,
                     prepared, print_ratios, setup, train_config)

PARTS = ("core", "mask", "eval", "checkpoint", "other")


class Meter:
    """CPU-time accumulators for one level, fed by wrappers around the project's functions."""

    def __init__(self):
        self.parts = dict.fromkeys(PARTS, 0.0)
        self.in_step: float | None = None
        self.mask_in_step = 0.0

    def timed(self, part: str, fn):
        def wrapper(*args, **kwargs):
            t0 = cpu_seconds()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = cpu_seconds() - t0
                self.parts[part] += spent
                if part == "mask" and self.in_step is not None:
                    self.mask_in_step += spent

        return wrapper


def patch(meter: Meter, before: bool):
    """Install the timing wrappers (and, for ``before``, the replaced pieces); returns an undo function."""
    import tickets.training.loop as loop
    import tickets.verbs.level as level
    from tickets.masks import Mask
    from tickets.runs import RunDir
    import tickets.training.callbacks as callbacks
    from tickets.training.callbacks import CheckpointCallback

    saved = [(Mask, "apply_", Mask.apply_), (Mask, "mask_grads_", Mask.mask_grads_), (loop, "evaluate", loop.evaluate),
             (level, "evaluate", level.evaluate), (RunDir, "save_checkpoint", RunDir.save_checkpoint),
             (CheckpointCallback, "on_epoch_end", CheckpointCallback.on_epoch_end),
             (callbacks, "pack_checkpoint", callbacks.pack_checkpoint)]
    apply_, grads_ = (legacy_apply_, legacy_mask_grads_) if before else (Mask.apply_, Mask.mask_grads_)
    Mask.apply_ = meter.timed("mask", apply_)
    Mask.mask_grads_ = meter.timed("mask", grads_)
    evaluate = plain_evaluate if before else loop.evaluate
    loop.evaluate = level.evaluate = meter.timed("eval", evaluate)
    CheckpointCallback.on_epoch_end = meter.timed("checkpoint", CheckpointCallback.on_epoch_end)
    if before:
        callbacks.pack_checkpoint = lambda ckpt: ckpt  # checkpoints stay unpacked

    def undo():
        for owner, name, value in saved:
            setattr(owner, name, value)

    return undo


def plain_evaluate(model, task, split="test", *, device="auto", batch_size=256, limit=None, mask=None,
                   progress=False):
    """``evaluate`` before issue 11: the requested batches in the split's order, one forward each."""
    import torch

    from tickets.training.evaluate import _batch_size, eval_batches

    metric, n = task.new_metric(), 0
    with torch.no_grad():
        for batch in eval_batches(model, task, split, device=device, batch_size=batch_size, limit=limit, mask=mask,
                                  progress=progress, desc="eval"):
            metric.update(task.forward(model, batch), batch)
            n += _batch_size(batch)
    return {**metric.compute(), "examples": n}


def level_once(p, cfg, mask, limit, before: bool, shares: dict, totals: list):
    import torch

    from tickets.runs import RunDir
    from tickets.training.callbacks import Callback
    from tickets.verbs.level import run_level

    meter = Meter()

    class StepTimer(Callback):
        def on_batch(self, state, batch):
            meter.in_step, meter.mask_in_step = cpu_seconds(), 0.0
            return batch

        def after_optimizer_step(self, state):
            meter.parts["core"] += cpu_seconds() - meter.in_step - meter.mask_in_step
            meter.in_step = None

    undo = patch(meter, before)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = RunDir(tmp, "bench", {"bench": "level_overhead", "before": before})
            t0 = cpu_seconds()
            run_level(run, 1, p, mask=mask, start=p.theta0, train=cfg, seed=0, device=torch.device("cpu"),
                      limit=limit, progress=False, callbacks=[StepTimer()])
            total = cpu_seconds() - t0
    finally:
        undo()
    meter.parts["other"] = total - sum(v for k, v in meter.parts.items() if k != "other")
    for k, v in meter.parts.items():
        shares.setdefault(k, []).append(100 * v / total)
    totals.append(total)


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--models", default="resnet20,minilm")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=2000, help="ResNet-20 training subset (default 2000)")
    ap.add_argument("--text-train-size", type=int, default=320, help="MiniLM training subset (default 320)")
    ap.add_argument("--limit", type=int, default=2000, help="ResNet-20 test images (default 2000)")
    ap.add_argument("--sparsity", type=float, default=0.5)
    args = ap.parse_args(argv)
    setup(args)
    for key in args.models.split(","):
        p = prepared(key, args, train_size=args.text_train_size if key == "minilm" else args.train_size)
        cfg = train_config(p, epochs=args.epochs)
        mask = magnitude_mask(p, args.sparsity)
        limit = None if key == "minilm" else args.limit
        shares = {"now": {}, "before": {}}
        totals = {"now": [], "before": []}
        times = interleave({v: (lambda v=v: level_once(p, cfg, mask, limit, v == "before", shares[v], totals[v]))
                            for v in ("before", "now")}, rounds=args.rounds, warmup=0)
        print(f"{key}: level at sparsity {mask.sparsity:.2f}, {len(p.task.train)} training examples, "
              f"{args.epochs} epochs of batch {cfg.batch_size}, test {limit or 'all'}")
        for v in ("before", "now"):
            print(f"  {v:6s} level CPU median {statistics.median(totals[v]):.2f} s; shares of the level (%):")
            for part in PARTS:
                print(f"    {part:10s} {describe(shares[v][part], '{:.1f}')}")
            outside = [100 - c for c in shares[v]["core"]]
            print(f"    outside forward/backward/optimizer: {describe(outside, '{:.1f}')}")
        print_ratios(times, baseline="before", title="  level CPU (speed-up = before / variant):")


if __name__ == "__main__":
    main()
