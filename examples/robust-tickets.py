#!/usr/bin/env python
"""Robust tickets at small scale (issue 4 §5): standard vs robust IMP tickets from resnet20-cifar10, transferred.

From the pre-trained ResNet-20 (CIFAR-10), draw IMP tickets on CIFAR-10 twice per seed:

- standard: the shared CV settings (``--levels 4 --rate 0.4 --train-size 2000 --epochs 3 --limit 2000``), so the
  runs are reused by content hash by any other study writing to the same ``--out``;
- robust: the same, under PGD-3 adversarial training (ε 2/255, α 1/255; ``--adv pgd --adv-eps 2 --adv-alpha 1
  --adv-steps 3``), with robust accuracy (PGD-20, ε 2/255, α 0.5/255) on the first 500 CIFAR-10 test images.

Transfer both kinds (levels 1–4: 40, 64, 78.4, 87.0 % sparse) with *standard* fine-tuning to CIFAR-100,
Fashion-MNIST and MNIST (same subset sizes and epochs, the CNN training defaults), plus the dense baselines, for
seeds 0 and 1. Also: the robust-accuracy sanity figures of the standard ResNet-20 (1,000 CIFAR-10 test images);
the cost of drawing a ticket (one dense + one pruned IMP level, standard vs PGD-3 vs FGSM-RS training, timed in
this process on the same data); and a double-win check on Fashion-MNIST (levels 2 and 4 of both kinds of tickets
and the dense model, standard and PGD-3 adversarial fine-tuning, each with PGD-20 robust accuracy at ε 2/255 on
500 test images). Every step is a plain ``tickets`` command, run one after the other, each resumable (rerunning
this script skips finished work).

    export TICKETS_DATA=/path/to/shared/data TICKETS_MODELS=/path/to/shared/models
    mkdir -p runs/robust-tickets
    OMP_NUM_THREADS=1 nohup python examples/robust-tickets.py > runs/robust-tickets/experiment.log 2>&1 &
    python examples/robust-tickets.py --report     # tables + plot into docs/results/robust-tickets/

Per-step wall-clock and CPU seconds go to ``runs/robust-tickets/steps.jsonl``. The report is written by
``robust_tickets_report.py`` beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared step runner beside this file
import _steps  # noqa: E402
from _steps import run_path  # noqa: E402

OUT = "runs/cv"
STEPS_LOG = Path("runs/robust-tickets/steps.jsonl")
RESULTS = Path("docs/results/robust-tickets")
SEEDS = (0, 1)
TARGETS = ("cifar100", "fashion-mnist")
EXTRA_TARGETS = ("mnist",)
DOUBLE_WIN_TASK, DOUBLE_WIN_LEVELS = "fashion-mnist", (2, 4)
ADV_TRANSFER = ["--adv", "pgd", "--adv-eps", "2", "--adv-alpha", "1", "--adv-steps", "3"]
RA = ["--robust-eval", "--attack", "pgd", "--eps", "2", "--alpha", "0.5", "--steps", "20", "--robust-limit", "500"]
SANITY = {  # name -> attack flags; every run also reports the clean accuracy of the same images
    "pgd-10": ["--attack", "pgd", "--eps", "8", "--steps", "10"],
    "pgd-20": ["--attack", "pgd", "--eps", "8", "--steps", "20"],
    "fgsm": ["--attack", "fgsm", "--eps", "8"],
    "eps-0": ["--attack", "pgd", "--eps", "0"],
}
SANITY_IMAGES = "1000"
COST_OUT = "runs/robust-tickets/cost"  # not shared: one dense + one pruned level per kind, to time them
COST_VARIANTS = {"standard": [], "pgd3": ["--adv", "pgd", "--adv-eps", "2", "--adv-alpha", "1", "--adv-steps", "3"],
                 "fgsm-rs": ["--adv", "fgsm", "--adv-eps", "8"]}
LEVELS = (1, 2, 3, 4)
# FIND (+ ROBUST) are FIND_SETTINGS (+ ROBUST_SETTINGS) of robust_tickets_report.py, which finds these runs again
# for the report; tests/test_robust.py checks that the two agree
SHARED = ["--train-size", "2000", "--epochs", "3", "--limit", "2000"]
FIND = ["tickets", "find", "--model", "resnet20-cifar10", "--task", "cifar10", "--method", "imp",
        "--levels", "4", "--rate", "0.4", *SHARED]
ROBUST = ["--adv", "pgd", "--adv-eps", "2", "--adv-alpha", "1", "--adv-steps", "3",
          "--robust-eval", "--attack", "pgd", "--eps", "2", "--alpha", "0.5", "--steps", "20", "--robust-limit", "500"]
RETRIES = 3


def run_step(name: str, argv: list[str]) -> str:
    """One step of this study (see ``_steps.run_step``), logged in ``STEPS_LOG``."""
    return _steps.run_step(STEPS_LOG, name, argv, retries=RETRIES, pause=120)


def transfers(kind: str, find_dir: str, seed: int, targets=TARGETS) -> None:
    for task in targets:
        for level in LEVELS:
            ticket = f"{find_dir}/level-{level:02d}/ticket.safetensors"
            run_step(f"transfer-{kind}-s{seed}-{task}-L{level}",
                     ["tickets", "transfer", "--ticket", ticket, "--task", task, *SHARED, "--seed", str(seed),
                      "--out", OUT, "--quiet"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--report", action="store_true", help="only write the table and plot from finished runs")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    if args.report:
        from robust_tickets_report import robust_transfer_report

        print(robust_transfer_report(OUT, RESULTS, steps_log=STEPS_LOG))
        return
    finds = {}
    # The CV study (examples/cv-resnet20.yaml) shares the standard tickets, dense baselines and standard-ticket
    # transfers by content hash; the steps unique to this study run first, so those are usually found done.
    # 1. robust tickets: IMP under PGD-3 adversarial training (ε 2/255), RA after every level
    for seed in SEEDS:
        out = run_step(f"find-robust-s{seed}", [*FIND, *ROBUST, "--seed", str(seed), "--out", OUT, "--quiet"])
        finds[("robust", seed)] = run_path(out)
    for seed in SEEDS:
        transfers("robust", finds[("robust", seed)], seed, TARGETS + EXTRA_TARGETS)
    # 2. sanity figures; the cost of drawing a ticket (dense level + one pruned level, same data, this process,
    #    no robust evaluation) with standard, PGD-3 and FGSM-RS training; the cost of one robust evaluation
    sanity = {}
    for name, flags in SANITY.items():
        out = run_step(f"sanity-{name}", ["tickets", "eval", "--model", "resnet20-cifar10", "--task", "cifar10",
                                          *flags, "--limit", SANITY_IMAGES, "--json", "--quiet"])
        sanity[name] = json.loads(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sanity.json").write_text(json.dumps(sanity, indent=2, sort_keys=True) + "\n")
    one_level = [*FIND[:FIND.index("--levels")], "--levels", "1", "--rate", "0.4", *SHARED, "--seed", "0",
                 "--out", COST_OUT, "--quiet"]
    for name, flags in COST_VARIANTS.items():
        run_step(f"cost-find-{name}", [*one_level, *flags])
    run_step("cost-robust-eval-500", ["tickets", "eval", "--model", "resnet20-cifar10", "--task", "cifar10",
                                      "--attack", "pgd", "--eps", "2", "--alpha", "0.5", "--steps", "20",
                                      "--limit", "500", "--quiet"])
    # 3. standard tickets (the shared CV settings), dense baselines, standard-ticket transfers
    for seed in SEEDS:
        out = run_step(f"find-standard-s{seed}", [*FIND, "--seed", str(seed), "--out", OUT, "--quiet"])
        finds[("standard", seed)] = run_path(out)
    for seed in SEEDS:
        for task in TARGETS + EXTRA_TARGETS:
            run_step(f"transfer-dense-s{seed}-{task}",
                     ["tickets", "transfer", "--model", "resnet20-cifar10", "--task", task, *SHARED,
                      "--seed", str(seed), "--out", OUT, "--quiet"])
        transfers("standard", finds[("standard", seed)], seed, TARGETS + EXTRA_TARGETS)
    # 4. double-win on Fashion-MNIST: standard and adversarial fine-tuning, RA measured
    for regime, flags in (("std", []), ("adv", ADV_TRANSFER)):
        for seed in SEEDS:
            base = ["tickets", "transfer", "--task", DOUBLE_WIN_TASK, *SHARED, "--seed", str(seed), "--out", OUT,
                    "--quiet", *flags, *RA]
            run_step(f"dw-{regime}-dense-s{seed}", [*base, "--model", "resnet20-cifar10"])
            for kind in ("standard", "robust"):
                for level in DOUBLE_WIN_LEVELS:
                    ticket = f"{finds[(kind, seed)]}/level-{level:02d}/ticket.safetensors"
                    run_step(f"dw-{regime}-{kind}-s{seed}-L{level}", [*base, "--ticket", ticket])
    print("all steps done", flush=True)
    try:
        from robust_tickets_report import robust_transfer_report

        print(robust_transfer_report(OUT, RESULTS, steps_log=STEPS_LOG))
    except Exception as exc:  # the report can always be rerun with --report
        print(f"report failed: {exc!r}; rerun with --report", flush=True)


if __name__ == "__main__":
    main()
