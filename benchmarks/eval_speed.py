"""Evaluation speed: ``tickets.training.evaluate.evaluate`` against the plain batching it replaced, same metrics.

    python benchmarks/eval_speed.py [--models resnet20,resnet56,minilm] [--rounds 10] [--limit 2048]

"plain" is the loop as it was: the split in its order, ``eval_batch_size`` (256) examples per forward.
"evaluate" is the project's function: a convolutional model through ``inference_copy`` (conv-BN folded,
channels-last) with each 256-batch forwarded in cache-sized chunks; text in length-sorted batches of at most 2,048
padded tokens. Per model: both variants' metrics (identical predictions, so identical accuracy and predicted-class
counts; mean losses within ~1e-7) and the median speed-up over interleaved rounds.
ResNet-20 / ResNet-56: pre-trained CIFAR-10 weights on the first ``--limit`` CIFAR-10 test images; MiniLM-L6:
a fresh SST-2 head (as at the start of a fine-tune) on the full GLUE dev set (872 sentences).
"""

from __future__ import annotations

from _timing import interleave, parser, print_ratios, setup

MODELS = {"resnet20": ("resnet20-cifar10", "cifar10"), "resnet56": ("resnet56-cifar10", "cifar10"),
          "minilm": ("minilm-l6", "glue/sst2")}


def plain_evaluate(model, task, split, batch_size, limit):
    """The evaluation loop before the change: requested batches, one forward each."""
    import torch

    from tickets.training.evaluate import _batch_size, eval_batches

    metric, n = task.new_metric(), 0
    with torch.no_grad():
        for batch in eval_batches(model, task, split, device="cpu", batch_size=batch_size, limit=limit, mask=None,
                                  progress=False, desc="plain"):
            metric.update(task.forward(model, batch), batch)
            n += _batch_size(batch)
    return {**metric.compute(), "examples": n}


def compare(a: dict, b: dict) -> str:
    if a == b:
        return "identical"
    diffs = {k: abs(a[k] - b[k]) / max(abs(a[k]), 1e-300) for k in a if a[k] != b[k]}
    return "differ (relative): " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--models", default="resnet20,resnet56,minilm")
    ap.add_argument("--limit", type=int, default=2048, help="CIFAR-10 test images for the ResNets (default 2048)")
    ap.add_argument("--batch-size", type=int, default=256, help="eval_batch_size (default 256, the project's)")
    args = ap.parse_args(argv)
    setup(args)
    from tickets.tasks import DataConfig
    from tickets.training.evaluate import evaluate
    from tickets.verbs.prepare import prepare

    for key in args.models.split(","):
        model_name, task_name = MODELS[key]
        p = prepare(model_name, task_name, data=DataConfig(train_size=1000), data_root=args.data_root,
                    model_root=args.model_root, head="pretrained" if key != "minilm" else "fresh")
        model, task = p.model, p.task
        limit = args.limit if task.kind == "image" else None
        split = "test"
        before = plain_evaluate(model, task, split, args.batch_size, limit)
        after = evaluate(model, task, split, device="cpu", batch_size=args.batch_size, limit=limit)
        print(f"{key}: {before['examples']} examples; metrics {compare(before, after)}")
        print(f"  plain    {before}\n  evaluate {after}")
        times = interleave({"plain": lambda: plain_evaluate(model, task, split, args.batch_size, limit),
                            "evaluate": lambda: evaluate(model, task, split, device="cpu",
                                                         batch_size=args.batch_size, limit=limit)},
                           rounds=args.rounds)
        print_ratios(times, baseline="plain", title=f"  {key} evaluation CPU seconds (speed-up = plain / variant):")


if __name__ == "__main__":
    main()
