#!/usr/bin/env python
"""Robust tickets at small scale (issue 4 §5): standard vs robust IMP tickets from resnet20-cifar10, transferred.

From the pre-trained ResNet-20 (CIFAR-10), draw IMP tickets on CIFAR-10 twice per seed:

- standard: the shared CV settings (``--levels 4 --rate 0.4 --train-size 2000 --epochs 3 --limit 2000``), so the
  runs are reused by content hash by any other study writing to the same ``--out``;
- robust: the same, under PGD-3 adversarial training (ε 2/255, α 1/255; ``--adv pgd --adv-eps 2 --adv-alpha 1
  --adv-steps 3``), with robust accuracy (PGD-20, ε 2/255, α 0.5/255) on the first 500 CIFAR-10 test images.

Then transfer both kinds (levels 1–4: 40, 64, 78.4, 87.0 % sparse) with *standard* fine-tuning to CIFAR-100 and
Fashion-MNIST (same subset sizes and epochs), plus the dense baselines, for seeds 0 and 1 — every step a plain
``tickets`` command, run one after the other, each resumable (rerunning this script skips finished work).

    export TICKETS_DATA=/path/to/shared/data TICKETS_MODELS=/path/to/shared/models
    OMP_NUM_THREADS=1 nohup python examples/robust-tickets.py > runs/robust-tickets.log 2>&1 &
    python examples/robust-tickets.py --report     # table + plot into docs/results/robust-tickets/

Phase 3 (after the above): the robust-accuracy sanity figures of the standard ResNet-20 (1,000 CIFAR-10 test
images), the cost of one robust evaluation, MNIST as a third target, and a double-win check on Fashion-MNIST
(levels 2 and 4 of both kinds of tickets and the dense model, standard and PGD-3 adversarial fine-tuning, each
with PGD-20 robust accuracy at ε 2/255 on 500 test images).

Per-step wall-clock and CPU seconds go to ``runs/robust-tickets/steps.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

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
LEVELS = (1, 2, 3, 4)
SHARED = ["--train-size", "2000", "--epochs", "3", "--limit", "2000"]
FIND = ["tickets", "find", "--model", "resnet20-cifar10", "--task", "cifar10", "--method", "imp",
        "--levels", "4", "--rate", "0.4", *SHARED]
ROBUST = ["--adv", "pgd", "--adv-eps", "2", "--adv-alpha", "1", "--adv-steps", "3",
          "--robust-eval", "--attack", "pgd", "--eps", "2", "--alpha", "0.5", "--steps", "20", "--robust-limit", "500"]
RETRIES = 3


def run_step(name: str, argv: list[str]) -> str:
    """Run one `tickets` command; log its wall and CPU seconds; return its stdout. Retries a failed step."""
    for attempt in range(1, RETRIES + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(argv)}", flush=True)
        proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        record = {"step": name, "argv": argv, "rc": proc.returncode, "attempt": attempt,
                  "wall_s": round(time.time() - t0, 1), "cpu_s": round(cpu, 1), "time": time.time()}
        STEPS_LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(STEPS_LOG, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(proc.stdout, end="", flush=True)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: rc {proc.returncode}, wall {record['wall_s']} s, "
              f"cpu {record['cpu_s']} s", flush=True)
        if proc.returncode == 0:
            return proc.stdout
        time.sleep(120)
    raise SystemExit(f"step {name} failed {RETRIES} times; fix it and rerun this script (finished work is kept)")


def run_path(stdout: str) -> str:
    match = re.search(r"^run: (.+)$", stdout, re.M)
    if not match:
        raise SystemExit("could not find the run directory in the command's output")
    return match.group(1).strip()


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
        from tickets.robust import robust_transfer_report

        print(robust_transfer_report(OUT, RESULTS, steps_log=STEPS_LOG))
        return
    finds = {}
    # 1. standard tickets (shared CV settings) and the dense baselines: no adversarial code needed
    for seed in SEEDS:
        out = run_step(f"find-standard-s{seed}", [*FIND, "--seed", str(seed), "--out", OUT, "--quiet"])
        finds[("standard", seed)] = run_path(out)
    for seed in SEEDS:
        for task in TARGETS:
            run_step(f"transfer-dense-s{seed}-{task}",
                     ["tickets", "transfer", "--model", "resnet20-cifar10", "--task", task, *SHARED,
                      "--seed", str(seed), "--out", OUT, "--quiet"])
    for seed in SEEDS:
        transfers("standard", finds[("standard", seed)], seed)
    # 2. robust tickets: IMP under PGD-3 adversarial training, then the same standard transfers
    for seed in SEEDS:
        out = run_step(f"find-robust-s{seed}", [*FIND, *ROBUST, "--seed", str(seed), "--out", OUT, "--quiet"])
        finds[("robust", seed)] = run_path(out)
    for seed in SEEDS:
        transfers("robust", finds[("robust", seed)], seed)
    # 3. sanity figures, the cost of one robust evaluation, a third target, and a double-win check
    sanity = {}
    for name, flags in SANITY.items():
        out = run_step(f"sanity-{name}", ["tickets", "eval", "--model", "resnet20-cifar10", "--task", "cifar10",
                                          *flags, "--limit", SANITY_IMAGES, "--json", "--quiet"])
        sanity[name] = json.loads(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sanity.json").write_text(json.dumps(sanity, indent=2, sort_keys=True) + "\n")
    run_step("cost-robust-eval-500", ["tickets", "eval", "--model", "resnet20-cifar10", "--task", "cifar10",
                                      "--attack", "pgd", "--eps", "2", "--alpha", "0.5", "--steps", "20",
                                      "--limit", "500", "--quiet"])
    for seed in SEEDS:
        for task in EXTRA_TARGETS:
            run_step(f"transfer-dense-s{seed}-{task}",
                     ["tickets", "transfer", "--model", "resnet20-cifar10", "--task", task, *SHARED,
                      "--seed", str(seed), "--out", OUT, "--quiet"])
        for kind in ("standard", "robust"):
            transfers(kind, finds[(kind, seed)], seed, EXTRA_TARGETS)
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
        from tickets.robust import robust_transfer_report

        print(robust_transfer_report(OUT, RESULTS, steps_log=STEPS_LOG))
    except Exception as exc:  # the report can always be rerun with --report
        print(f"report failed: {exc!r}; rerun with --report", flush=True)


if __name__ == "__main__":
    main()
