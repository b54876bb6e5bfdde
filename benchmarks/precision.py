"""Mixed precision on this CPU: a MiniLM SST-2 (and ResNet-20) training step in fp32 vs bf16 autocast.

    python benchmarks/precision.py [--models minilm,resnet20] [--rounds 10] [--steps 4]

Each variant trains its own copy of the model under a 50% magnitude ticket with the project's step (the loop's
``precision_context``: bf16 autocast around forward + loss; weights, mask and optimizer in float32), on the same
real batches, one thread, interleaved rounds. Prints CPU seconds per step and fp32 / bf16 (median, IQR, range):
above 1 means bf16 is faster here.
"""

from __future__ import annotations

import copy

from _timing import interleave, magnitude_mask, parser, prepared, print_ratios, setup, train_config, training_batches


def step_fn(p, precision: str, batches: list):
    import torch

    from tickets.training.callbacks import MaskCallback
    from tickets.training.loop import make_optimizer, optimizer_step, precision_context

    model = copy.deepcopy(p.model)
    cfg = train_config(p, precision=precision)
    mask = magnitude_mask(p, 0.5)
    masking = MaskCallback(mask)
    mask.apply_(model)
    optimizer = make_optimizer(model, cfg)
    autocast, _ = precision_context(precision, torch.device("cpu"))
    model.train()

    def run() -> None:
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = p.task.loss(p.task.forward(model, batch), batch)
            loss.backward()
            mask.mask_grads_(model)
            optimizer_step(optimizer)
            mask.apply_(model)
        assert masking.mask is mask

    return run


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--models", default="minilm,resnet20")
    ap.add_argument("--steps", type=int, default=4, help="training steps per variant per round (default 4)")
    args = ap.parse_args()
    setup(args)
    for key in args.models.split(","):
        p = prepared(key, args, train_size=512)
        batches = training_batches(p, train_config(p), args.steps)
        times = interleave({v: step_fn(p, v, batches) for v in ("fp32", "bf16")}, rounds=args.rounds)
        print_ratios(times, baseline="fp32", title=f"{key}: CPU seconds per training step", per=args.steps)


if __name__ == "__main__":
    main()
