"""Fine-tuning throughput of minilm-l6 on real SST-2: the project's dynamic padding against fixed padding to
``max_length`` (64) and against the peers' recipe (padding every batch to 128 tokens, as Hugging Face's
``run_glue.py`` with ``--max_seq_length 128 --pad_to_max_length`` and the BERT lottery-ticket code do).

    python benchmarks/text_padding.py [--rounds 12] [--steps 5] [--batch-size 32] [--threads 1] [--no-fused]

The training step is the project's: ``make_optimizer`` with MiniLM's resolved config (fused AdamW, lr 2e-5),
``task.forward`` / ``task.loss``, backward, ``optimizer_step``; one torch thread (the project's ``--threads 1``)
unless told otherwise. Each variant trains its own copy of the model on its own epoch order of the same seeded
SST-2 subset: ``dynamic`` (length-bucketed batches padded to their longest sentence, what ``tickets`` does),
``fixed-64`` (plain shuffled batches padded to max_length 64) and ``peers-128`` (the same, tokenised and padded to
128). Rounds interleave the variants (``--steps`` steps each, the order rotating). Printed: examples per
CPU-second pooled over all rounds and their ratio (the throughput figure), and the median and spread of the
per-round ratios (wide: a round's few dynamic batches may all be short or all long).
"""

from __future__ import annotations

from _timing import describe, interleave, parser, setup


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, rounds=12)
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per variant per round (default 5)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-size", type=int, default=4096)
    ap.add_argument("--no-fused", action="store_true", help="plain (for-each) AdamW instead of the fused one")
    args = ap.parse_args(argv)
    setup(args)
    import copy

    import torch

    from tickets.config import TrainConfig, resolve_train
    from tickets.tasks import DataConfig
    from tickets.tasks.text import set_dynamic_padding
    from tickets.training.loop import make_optimizer, optimizer_step
    from tickets.verbs.prepare import prepare

    base = prepare("minilm-l6", "glue/sst2", data=DataConfig(train_size=args.train_size), data_root=args.data_root)
    wide = prepare("minilm-l6", "glue/sst2", data=DataConfig(train_size=args.train_size, max_length=128),
                   data_root=args.data_root)
    set_dynamic_padding(wide.task, False)
    cfg = resolve_train(TrainConfig(batch_size=args.batch_size), base.family, base.recipe)
    variants = {"dynamic": (base.task, True), "fixed-64": (base.task, False), "peers-128": (wide.task, False)}
    stats = {name: {"examples": [], "tokens": 0, "padded": 0} for name in variants}

    def make(name: str):
        task, dynamic = variants[name]
        model = copy.deepcopy(base.model).train()
        optimizer = make_optimizer(model, cfg)
        if args.no_fused:
            groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
            optimizer = torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)
        state = {"epoch": 0, "it": None}

        def next_batch():
            while True:
                if state["it"] is None:
                    set_dynamic_padding(task, dynamic)
                    gen = torch.Generator().manual_seed(1000 + state["epoch"])
                    state["epoch"] += 1
                    state["it"] = iter(list(task.train.batches(args.batch_size, shuffle=True, generator=gen,
                                                               augment=True, drop_last=True)))
                try:
                    return next(state["it"])
                except StopIteration:
                    state["it"] = None

        def run() -> None:
            examples = 0
            for _ in range(args.steps):
                batch = next_batch()
                optimizer.zero_grad(set_to_none=True)
                task.loss(task.forward(model, batch), batch).backward()
                optimizer_step(optimizer)
                examples += batch["input_ids"].shape[0]
                stats[name]["tokens"] += int(batch["attention_mask"].sum())
                stats[name]["padded"] += batch["input_ids"].numel()
            stats[name]["examples"].append(examples)

        return run

    fused = not args.no_fused
    print(f"minilm-l6 on glue/sst2: {len(base.task.train)} training sentences, batch {args.batch_size}, "
          f"{args.steps} steps per variant per round, {args.rounds} rounds, torch threads {torch.get_num_threads()}, "
          f"{'fused' if fused else 'for-each'} AdamW")
    times = interleave({name: make(name) for name in variants}, rounds=args.rounds)
    rate = {name: [e / t for e, t in zip(stats[name]["examples"][-args.rounds:], times[name])] for name in variants}
    pooled = {name: sum(stats[name]["examples"][-args.rounds:]) / sum(times[name]) for name in variants}
    for name in variants:
        s = stats[name]
        print(f"  {name:10s} {pooled[name]:7.1f} examples per CPU-second "
              f"(mean batch width {s['padded'] / sum(s['examples']) :.1f} tokens, "
              f"{100 * s['tokens'] / s['padded']:.0f}% real tokens)")
    for other in ("fixed-64", "peers-128"):
        ratios = [a / b for a, b in zip(rate["dynamic"], rate[other])]
        print(f"  dynamic padding speed-up over {other}: {pooled['dynamic'] / pooled[other]:.2f} pooled over all "
              f"rounds; per round {describe(ratios)}")


if __name__ == "__main__":
    main()
