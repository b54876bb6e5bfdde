"""Why bf16 autocast can be slower than fp32 for MiniLM-L6 fine-tuning on a GPU (docs/performance.md, "GPU check").

Times one training step (forward, backward, fused AdamW) of minilm-l6's classification model on random token ids,
fp32 against bf16 autocast, interleaved, at batch 32 × 64 tokens (the study's setting: launch-bound) and batch
256 × 128 tokens (compute-bound), and counts the CUDA kernels one step launches. Needs a CUDA device.
    python benchmarks/gpu_precision_profile.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only to try the script")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: nothing to profile")
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    from tickets.models import load_model

    spec = load_model("minilm-l6")
    from transformers import AutoModelForSequenceClassification

    import copy

    cfg = copy.deepcopy(spec.module.config)
    cfg.num_labels = 2
    model = AutoModelForSequenceClassification.from_config(cfg)
    model.bert.load_state_dict(spec.module.base.state_dict(), strict=False)
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=dev.type == "cuda")
    out = {"gpu": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__}
    for batch, length in ((32, 64), (256, 128)) if dev.type == "cuda" else ((4, 16),):
        ids = torch.randint(1000, 30000, (batch, length), device=dev)
        mask = torch.ones_like(ids)
        labels = torch.randint(0, 2, (batch,), device=dev)

        def step(precision: str) -> None:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def timed(precision: str) -> float:
            sync()
            t = time.perf_counter()
            for _ in range(args.steps):
                step(precision)
            sync()
            return (time.perf_counter() - t) / args.steps

        for p in ("fp32", "bf16"):
            for _ in range(3):
                step(p)
        times = {"fp32": [], "bf16": []}
        for _ in range(args.rounds):
            for p in ("fp32", "bf16"):
                times[p].append(timed(p))
        kernels = {}
        for p in ("fp32", "bf16"):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA,
                                                    torch.profiler.ProfilerActivity.CPU]) as prof:
                step(p)
                sync()
            events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            kernels[p] = {"cuda_kernels": len(events),
                          "cuda_ms": round(sum(e.device_time for e in events) / 1000, 2)}
        key = f"batch {batch} x {length} tokens"
        out[key] = {p: {"ms_per_step": round(statistics.median(v) * 1000, 2), **kernels[p]} for p, v in times.items()}
        out[key]["bf16_speedup"] = round(statistics.median(times["fp32"]) / statistics.median(times["bf16"]), 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
