"""CNN training steps in channels-last layout and under torch.compile (``--channels-last``, ``--compile``).

    python benchmarks/cnn_layout.py [--models resnet20,resnet56] [--rounds 10] [--steps 5] [--no-compile]

Per model, four variants of the project's training step on the same CIFAR-10 batches (batch 64, augmented,
SGD momentum via ``make_optimizer`` / ``optimizer_step``, one thread), each on its own copy of the pre-trained
model: ``default`` (NCHW), ``channels-last`` (model and inputs as ``fine_tune`` converts them),
``compile`` (``loop.compiled``: inductor, static shapes) and ``compile+channels-last``. The compile variants
are compiled before timing; the one-off compile CPU is printed apart. Then the determinism check the options
promise: two short ``fine_tune`` runs per option (3 steps) must give the same weights, bit for bit, and the
options' weights are compared with the default's (they differ in the last bits, which is why the run hash
records them).
"""

from __future__ import annotations

import copy

from _timing import (cpu_seconds, interleave, parser, prepared, print_ratios, setup, train_config,
                     training_batches)


def variant(p, cfg, batches, channels_last: bool, compile_: bool, compile_cpu: dict, name: str):
    import torch

    from tickets.training.loop import _channels_last, compiled, make_optimizer, optimizer_step

    model = copy.deepcopy(p.model).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
        batches = [_channels_last(b) for b in batches]
    forward = compiled(model, torch.device("cpu"), fresh=False) if compile_ else model
    optimizer = make_optimizer(model, cfg)
    task = p.task

    def run() -> None:
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            task.loss(task.forward(forward, batch), batch).backward()
            optimizer_step(optimizer)

    if compile_:
        t0 = cpu_seconds()
        run()  # compiles (every batch has the same shape)
        compile_cpu[name] = cpu_seconds() - t0
    return run


def determinism(p, **options) -> tuple[bool, bool]:
    """(two runs with ``options`` give the same weights, those weights equal the default's)."""
    import torch

    from tickets.training.loop import fine_tune

    def once(**opts):
        p.load_weights(p.theta0)
        cfg = train_config(p, epochs=1, max_steps=3, **opts)
        fine_tune(p.model, p.task, cfg, device="cpu", seed=0, progress=False, family=p.family, recipe=p.recipe)
        return {k: v.clone() for k, v in p.model.state_dict().items()}

    a, b, base = once(**options), once(**options), once()
    same = all(torch.equal(a[k], b[k]) for k in a)
    as_default = all(torch.equal(a[k], base[k]) for k in a)
    return same, as_default


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--models", default="resnet20,resnet56")
    ap.add_argument("--steps", type=int, default=5, help="steps per round (default 5)")
    ap.add_argument("--no-compile", action="store_true", help="only the layouts (skips the minutes of compiling)")
    args = ap.parse_args(argv)
    setup(args)
    for key in args.models.split(","):
        p = prepared(key, args)
        cfg = train_config(p)
        batches = training_batches(p, cfg, args.steps)
        kinds = {"default": (False, False), "channels-last": (True, False)}
        if not args.no_compile:
            kinds.update({"compile": (False, True), "compile+channels-last": (True, True)})
        compile_cpu: dict[str, float] = {}
        runs = {name: variant(p, cfg, batches, cl, comp, compile_cpu, name) for name, (cl, comp) in kinds.items()}
        times = interleave(runs, rounds=args.rounds)
        print(f"{key}: {args.steps} steps of batch {cfg.batch_size} per round, optimizer {cfg.optimizer}")
        print_ratios(times, baseline="default", per=args.steps, title="  CPU per step (speed-up = default / variant):")
        for name, spent in compile_cpu.items():
            print(f"  {name}: first pass (compile) {spent:.1f} s CPU")
        checks = [("channels_last", {"channels_last": True})]
        if not args.no_compile:
            checks.append(("compile", {"compile": True}))
        for label, opts in checks:
            same, as_default = determinism(p, **opts)
            print(f"  {label}: two runs bit-identical {same}; equal to the default's weights {as_default}")


if __name__ == "__main__":
    main()
