"""Cost of a masked training step: dense vs masked (the project's) vs masked with the old mask code vs the
peers' ``torch.nn.utils.prune`` recipe; the mask work's share of a step; ticket file sizes.

    python benchmarks/step_overhead.py [--models resnet20,resnet56,minilm] [--rounds 10] [--sparsity 0.5]

Every variant runs the project's training step on its own copy of the model, on the same real batches (CIFAR-10,
batch 64, augmented; SST-2, batch 32, length-bucketed dynamic padding), with the project's optimizer
(``make_optimizer``: SGD momentum for the ResNets, fused AdamW for MiniLM; ``optimizer_step``), one thread:

* ``dense``: no mask;
* ``masked``: ``Mask.mask_grads_`` before and ``Mask.apply_`` after the optimizer step (``MaskCallback``);
* ``masked-legacy``: the same with the mask code before issue 11 (``masked_fill_`` per tensor);
* ``torch-prune``: ``torch.nn.utils.prune.custom_from_mask`` on every prunable tensor (a forward pre-hook
  recomputes ``weight = weight_orig * mask`` each forward; what the BERT lottery-ticket code does).

Prints per-step CPU time and per-round ratios to ``dense`` (median, IQR, range), the mask work per step
(``mask_grads_`` + ``apply_``, timed inside the masked variants) as a share of the masked step, and the ticket
file size against one byte per weight and against torch-prune's float ``weight_mask`` state dict.
"""

from __future__ import annotations

import copy
import io
import statistics
import tempfile
from pathlib import Path

from _timing import (cpu_seconds, describe, interleave, legacy_apply_, legacy_mask_grads_, magnitude_mask, parser,
                     prepared, print_ratios, setup, train_config, training_batches)


def torch_prune(model, mask) -> None:
    """The peers' recipe: ``torch.nn.utils.prune.custom_from_mask`` on each masked parameter."""
    from torch.nn.utils import prune

    modules = dict(model.named_modules())
    for name, m in mask.items():
        path, _, attr = name.rpartition(".")
        prune.custom_from_mask(modules[path], attr, m)


def variant(p, cfg, batches, mask, kind: str, mask_cpu: list[float]):
    """A closure running one pass over ``batches`` with the ``kind`` of masking on its own model copy."""
    from tickets.training.loop import make_optimizer, optimizer_step

    model = copy.deepcopy(p.model).train()
    task = p.task
    if kind == "torch-prune":
        torch_prune(model, mask)
    elif kind in ("masked", "masked-legacy"):
        mask.apply_(model)
    grads, weights = ((mask.mask_grads_, mask.apply_) if kind == "masked"
                      else (lambda m: legacy_mask_grads_(mask, m), lambda m: legacy_apply_(mask, m)))
    optimizer = make_optimizer(model, cfg)
    masked = kind in ("masked", "masked-legacy")

    def run() -> None:
        spent = 0.0
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            task.loss(task.forward(model, batch), batch).backward()
            if masked:
                t0 = cpu_seconds()
                grads(model)
                spent += cpu_seconds() - t0
            optimizer_step(optimizer)
            if masked:
                t0 = cpu_seconds()
                weights(model)
                spent += cpu_seconds() - t0
        mask_cpu.append(spent)

    return run


def ticket_sizes(p, mask) -> str:
    import torch

    from tickets.ticket import Ticket, save_ticket

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.safetensors"
        save_ticket(path, Ticket(mask, {"model": p.model_id}))
        ours = path.stat().st_size
    bools = sum(t.numel() for _, t in mask.items())
    buf = io.BytesIO()
    torch.save({f"{n[:-len('.weight')]}.weight_mask": t.float() for n, t in mask.items()}, buf)
    legacy = buf.getbuffer().nbytes
    return (f"ticket file {ours} B = {ours / bools:.3f} of one byte per weight ({bools} B), "
            f"{ours / legacy:.4f} of torch-prune's float weight_mask state dict ({legacy} B)")


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--models", default="resnet20,resnet56,minilm")
    ap.add_argument("--sparsity", type=float, default=0.5, help="magnitude sparsity of θ0 (default 0.5)")
    ap.add_argument("--steps", type=int, default=0, help="steps per round (default 5 for CNNs, 3 for MiniLM)")
    args = ap.parse_args(argv)
    setup(args)
    for key in args.models.split(","):
        p = prepared(key, args)
        cfg = train_config(p)
        steps = args.steps or (3 if key == "minilm" else 5)
        batches = training_batches(p, cfg, steps)
        mask = magnitude_mask(p, args.sparsity)
        mask_cpu = {k: [] for k in ("dense", "masked", "masked-legacy", "torch-prune")}
        runs = {k: variant(p, cfg, batches, mask, k, mask_cpu[k]) for k in mask_cpu}
        times = interleave(runs, rounds=args.rounds)
        width = statistics.mean(b["input_ids"].shape[1] for b in batches) if "input_ids" in batches[0] else None
        print(f"{key}: {mask.num_total} prunable weights at sparsity {mask.sparsity:.2f}; {steps} steps per round of "
              f"batch {cfg.batch_size}" + (f" (mean padded width {width:.1f})" if width else "") +
              f"; optimizer {cfg.optimizer}")
        print_ratios(times, baseline="dense", per=steps, speedup=False, title="  CPU per step, cost ratio to dense:")
        for kind in ("masked", "masked-legacy"):
            spent = mask_cpu[kind][-args.rounds:]  # the timed rounds (after the warm-up)
            share = [s / t for s, t in zip(spent, times[kind])]
            print(f"  mask work ({kind}): {statistics.median(spent) / steps * 1000:.2f} ms per step, "
                  f"share of the step {describe([100 * x for x in share], '{:.2f}')} %")
        before = [a / b for a, b in zip(mask_cpu["masked-legacy"][-args.rounds:], mask_cpu["masked"][-args.rounds:])]
        print(f"  mask work before/after (legacy / new): {describe(before)}")
        print("  " + ticket_sizes(p, mask))


if __name__ == "__main__":
    main()
