"""Core costs, measured side by side in one run: masking overhead per training step, and ticket file size.

    python benchmarks/core_overhead.py            # ResNet-20 if TICKETS_MODELS is set, else the small CNN

Prints ratios: masked / unmasked step time (target: < 1.10), and ticket bytes / bool-tensor bytes (target:
about 1/8) and / torch.nn.utils.prune state dict bytes.
"""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tickets.masks import Mask, PrunableSet
from tickets.pruning import random_prune
from tickets.ticket import Ticket, save_ticket


def step_time(model, x, y, mask, steps=10):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if mask is not None:
            mask.mask_grads_(model)
        opt.step()
        if mask is not None:
            mask.apply_(model)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if os.environ.get("TICKETS_MODELS"):
        from tickets.models import load_model

        spec = load_model("resnet20-cifar10")
        x, batch = torch.rand(128, 3, 32, 32), 128
    else:
        from tickets.models import load_model

        spec = load_model("small-cnn")
        x, batch = torch.rand(128, 1, 8, 8), 128
    model = spec.module.train()
    y = torch.randint(0, 10, (batch,))
    names = PrunableSet.parse("cnn").resolve(model)
    mask = random_prune(Mask.ones_like(model, names), 0.8, generator=torch.Generator().manual_seed(0))
    # interleave to share machine noise fairly
    dense, masked = [], []
    for _ in range(3):
        dense.append(step_time(model, x, y, None))
        masked.append(step_time(model, x, y, mask))
    d, m = statistics.median(dense), statistics.median(masked)
    print(f"model {spec.name}: {mask.num_total} prunable weights, batch {batch}")
    print(f"step time dense {d * 1000:.1f} ms, masked {m * 1000:.1f} ms, ratio masked/dense {m / d:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.safetensors"
        save_ticket(path, Ticket(mask, {"model": spec.name}))
        ours = path.stat().st_size
        bools = sum(t.numel() for _, t in mask.items())  # one byte per weight
        buf = io.BytesIO()
        torch.save({f"{n[:-len('.weight')]}.weight_mask": t.float() for n, t in mask.items()}, buf)
        legacy = buf.getbuffer().nbytes
    print(f"ticket file {ours} B; bool tensors {bools} B (ratio {ours / bools:.3f}); "
          f"torch-prune float masks {legacy} B (ratio {ours / legacy:.4f})")


if __name__ == "__main__":
    main()
