"""Fine-tuning throughput of minilm-l6 on real SST-2, with and without dynamic padding, in one run.

    python benchmarks/text_padding.py [--data-root ../shared/data] [--seconds 30] [--batch-size 32]

Both modes train the same model (AdamW, lr 2e-5, the same steps as ``tickets.training.loop.fine_tune``) on the same
seeded SST-2 training subset; they alternate step by step so that other load on a shared machine hits both alike
(only the optimisation step is timed: forward, loss, backward, AdamW update). "dynamic": length-bucketed batches padded to their longest sentence; "fixed": plain shuffled batches padded
to max_length (64 for SST-2). Prints examples/second for each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from tickets.models import load_model
from tickets.tasks import DataConfig, load_task
from tickets.tasks.text import set_dynamic_padding


def main(argv: list[str] | None = None) -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("TICKETS_DATA", str(here.parent / "shared" / "data")))
    ap.add_argument("--seconds", type=float, default=30.0, help="about this many timed seconds per mode (default 30)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--fused", action="store_true", help="fused AdamW (much faster optimizer step on CPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = load_model("minilm-l6")
    task = load_task("glue/sst2", model=spec, data_root=args.data_root, data=DataConfig(train_size=args.train_size))
    spec.adapt_to(task, "fresh", 0)
    model = spec.module
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=args.fused or None)
    print(f"minilm-l6 on glue/sst2: {len(task.train)} training examples, batch {args.batch_size}, "
          f"max_length {task.info['max_length']}, torch threads {torch.get_num_threads()}, fused AdamW {args.fused}",
          file=sys.stderr)

    modes = {"dynamic": True, "fixed": False}
    iters = {m: None for m in modes}
    stats = {m: {"examples": 0, "seconds": 0.0, "steps": 0, "tokens": 0, "padded": 0} for m in modes}

    def next_batch(mode: str, epoch: list[int] = [0]):
        set_dynamic_padding(task, modes[mode])
        while True:
            if iters[mode] is None:
                gen = torch.Generator().manual_seed(1000 * epoch[0] + (mode == "fixed"))
                epoch[0] += 1
                iters[mode] = task.train.batches(args.batch_size, shuffle=True, generator=gen, drop_last=True)
            try:
                return next(iters[mode])
            except StopIteration:
                iters[mode] = None

    def step(batch) -> None:
        opt.zero_grad(set_to_none=True)
        loss = task.loss(task.forward(model, batch), batch)
        loss.backward()
        opt.step()

    for mode in modes:  # warm-up (allocator, kernels) — not timed
        step(next_batch(mode))
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 2 * args.seconds or min(s["steps"] for s in stats.values()) < 3:
        for mode in modes:  # one step each, alternating, so other load on the machine hits both alike
            s = stats[mode]
            batch = next_batch(mode)
            t1 = time.perf_counter()
            step(batch)
            s["seconds"] += time.perf_counter() - t1
            s["examples"] += batch["input_ids"].shape[0]
            s["steps"] += 1
            s["tokens"] += int(batch["attention_mask"].sum())
            s["padded"] += batch["input_ids"].numel()

    rate = {}
    for mode, s in stats.items():
        rate[mode] = s["examples"] / s["seconds"]
        print(f"{mode:8s} {rate[mode]:8.1f} examples/s  ({s['steps']} steps, {s['examples']} examples, "
              f"{s['seconds']:.1f} s; mean batch width {s['padded'] / s['examples']:.1f} tokens, "
              f"{100 * s['tokens'] / s['padded']:.0f}% real tokens)")
    print(f"dynamic padding speed-up: {rate['dynamic'] / rate['fixed']:.2f}x")


if __name__ == "__main__":
    main()
