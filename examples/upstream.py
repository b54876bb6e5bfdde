#!/usr/bin/env python
"""Upstream study at CPU scale (issue 12 §5): which pre-training of ResNet-20 gives sparser matching tickets?

Expected CPU time: about 1.8 CPU-hours on one core (≈ 1.3 h when runs/cv already holds the CV / robust-tickets
studies' standard tickets and their transfers, which are reused by content hash); on the shared 2-core machine
expect 2.5–3.5 h wall. Budget, from measurements of this code on this machine (1 thread):

* SimCLR pre-training from scratch: one epoch on 10,000 CIFAR-10 images (batch 256) costs ~110 CPU-s (measured:
  109 CPU-s, 230 s wall at a 50% share of a core; two views forward + backward, 11 ms per image, of which the
  views 1.6 ms), plus ~14 CPU-s of kNN monitoring per epoch (bank of 9,000 training images, 1,000 validation
  images; 1.1 ms per image forward). 15 epochs on 9,000 images ≈ 29 CPU-min.
* Adversarial pre-training (PGD-3, ε 2/255) from the supervised ResNet-20: 3 epochs on 4,500 images ≈ 5 CPU-min.
* Probes (kNN and linear, bank = the 10,000 training images, the 10,000 test images) of 3 θ0: ≈ 4 CPU-min.
* IMP, 4 levels at rate 0.4 (40 / 64 / 78.4 / 87.0 %), 3 epochs on 2,000 images per level, seeds 0 and 1: on the
  SimCLR objective ≈ 6.5 CPU-min per seed; on supervised CIFAR-10 from the shipped and from the robust θ0 ≈ 2.5
  CPU-min per seed each.
* Transfers to CIFAR-100, Fashion-MNIST and MNIST (levels 1–4 of the three ticket kinds + the three dense θ0, seeds
  0 and 1): 90 fine-tunes of 3 epochs on 2,000 images, ~30 CPU-s each ≈ 45 CPU-min.

Steps (each a plain ``tickets`` command, resumable; rerunning this script skips finished work):

1. ``tickets pretrain --task simclr/cifar10``: SimCLR from the seeded random init, on the CIFAR-10 training set
   (9,000 images + 1,000 for validation; the kNN accuracy of every epoch is in the run's metrics.json history).
2. ``tickets pretrain --task cifar10 --init pretrained --adv pgd``: PGD-3 adversarial training (ε 2/255, α 1/255)
   of the supervised ResNet-20 (the robust model), with PGD-20 robust accuracy.
3. ``tickets eval --probe knn|linear`` of the three θ0 on CIFAR-10 (shipped supervised, SimCLR, robust).
4. IMP tickets, seeds 0 and 1: on the SimCLR objective (``--task simclr/cifar10`` from the SimCLR θ0, its
   projection head kept: ``--head pretrained``), on supervised CIFAR-10 (the shipped θ0: exactly the CV study's
   command) and on supervised CIFAR-10 from the robust θ0 (the same command with ``--weights``: standard
   fine-tuning, fresh head, so only the pre-training differs).
5. Transfers of levels 1–4 of each kind to CIFAR-100, Fashion-MNIST and MNIST (θ0 = the kind's own pre-trained
   weights under the mask, fresh head, standard fine-tuning), plus the dense baseline of each θ0; seed S tickets
   are transferred with seed S.

    export TICKETS_DATA=/path/to/shared/data TICKETS_MODELS=/path/to/shared/models
    mkdir -p runs/upstream
    OMP_NUM_THREADS=1 nohup python examples/upstream.py > runs/upstream/experiment.log 2>&1 &
    python examples/upstream.py --report        # tables into docs/results/upstream/
    python examples/upstream.py --smoke         # every command, a few steps each, into runs/upstream-smoke
                                                # (measured: 2.7 CPU-min, 6.3 min wall)

Per-step wall-clock and CPU seconds, and each step's run directory, go to ``<state>/steps.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared step runner beside this file
import _steps  # noqa: E402
from _steps import run_path  # noqa: E402

SEEDS = (0, 1)
TARGETS = ("cifar100", "fashion-mnist", "mnist")
LEVELS = (1, 2, 3, 4)
MODEL = "resnet20-cifar10"
KINDS = ("simclr", "supervised", "robust")  # ticket kinds, named by the pre-training of their θ0
LABELS = {"simclr": "SimCLR θ0, IMP on the SimCLR objective", "supervised": "supervised θ0 (shipped), IMP on "
          "CIFAR-10", "robust": "robust θ0 (PGD-3 ε 2/255), IMP on CIFAR-10"}
RETRIES = 3


def settings(smoke: bool) -> dict:
    """Every command-line fragment of the study (``smoke``: the same commands, a few steps each)."""
    if smoke:
        shared = ["--train-size", "300", "--max-steps", "2", "--epochs", "1", "--limit", "100"]
        return dict(out="runs/upstream-smoke", state=Path("runs/upstream-smoke"), results=None, shared=shared,
                    schedule=["--method", "imp", "--levels", "1", "--rate", "0.4"], levels=(1,), seeds=(0,),
                    simclr=["--train-size", "600", "--val-size", "100", "--epochs", "2", "--max-steps", "3",
                            "--batch-size", "256", "--lr", "0.12", "--warmup", "0.05", "--limit", "100"],
                    robust=["--train-size", "300", "--epochs", "1", "--max-steps", "2", "--limit", "100",
                            "--robust-limit", "20"],
                    probe=["--train-size", "1000", "--limit", "200", "--val-size", "0"])
    shared = ["--train-size", "2000", "--epochs", "3", "--limit", "2000"]
    return dict(out="runs/cv", state=Path("runs/upstream"), results=Path("docs/results/upstream"), shared=shared,
                schedule=["--method", "imp", "--levels", "4", "--rate", "0.4"], levels=LEVELS, seeds=SEEDS,
                simclr=["--val-size", "1000", "--epochs", "15", "--batch-size", "256", "--lr", "0.12",
                        "--warmup", "0.05", "--limit", "2000"],
                robust=["--train-size", "5000", "--epochs", "3", "--limit", "2000", "--robust-limit", "500"],
                probe=["--val-size", "0"])


ADV = ["--adv", "pgd", "--adv-eps", "2", "--adv-alpha", "1", "--adv-steps", "3"]
RA = ["--robust-eval", "--attack", "pgd", "--eps", "2", "--alpha", "0.5", "--steps", "20"]


def run_step(state: Path, name: str, argv: list[str]) -> str:
    """One step of this study (see ``_steps.run_step``), logged in ``<state>/steps.jsonl``."""
    return _steps.run_step(state / "steps.jsonl", name, argv, retries=RETRIES)


def run_study(s: dict) -> None:
    out, state, shared = s["out"], s["state"], s["shared"]
    common = ["--out", out, "--quiet", "--threads", "1"]
    # 1. SimCLR from scratch; 2. PGD-3 adversarial training of the supervised ResNet-20
    simclr = run_path(run_step(state, "pretrain-simclr", [
        "tickets", "pretrain", "--model", MODEL, "--task", "simclr/cifar10", "--init", "random", *s["simclr"],
        "--seed", "0", *common]))
    robust = run_path(run_step(state, "pretrain-robust", [
        "tickets", "pretrain", "--model", MODEL, "--task", "cifar10", "--init", "pretrained", "--head", "pretrained",
        *ADV, *s["robust"], *RA, "--seed", "0", *common]))
    weights = {"simclr": f"{simclr}/model.safetensors", "robust": f"{robust}/model.safetensors", "supervised": None}
    # 3. probes of the three θ0 on CIFAR-10
    for kind in KINDS:
        for probe in ("knn", "linear"):
            w = ["--weights", weights[kind]] if weights[kind] else []
            run_step(state, f"probe-{probe}-{kind}", ["tickets", "eval", "--model", MODEL, *w, "--task", "cifar10",
                                                      "--probe", probe, *s["probe"], "--json", "--quiet",
                                                      "--threads", "1"])
    # 4. IMP tickets of each kind, per seed
    finds = {}
    for seed in s["seeds"]:
        for kind in KINDS:
            task = "simclr/cifar10" if kind == "simclr" else "cifar10"
            w = ["--weights", weights[kind]] if weights[kind] else []
            if kind == "simclr":  # the objective's projection head comes with its θ0
                w += ["--head", "pretrained"]
            finds[(kind, seed)] = run_path(run_step(state, f"find-{kind}-s{seed}", [
                "tickets", "find", "--model", MODEL, "--task", task, *w, *s["schedule"], *shared, "--seed", str(seed),
                *common]))
    # 5. transfers and dense baselines
    for seed in s["seeds"]:
        for kind in KINDS:
            w = ["--weights", weights[kind]] if weights[kind] else []
            for target in TARGETS:
                run_step(state, f"dense-{kind}-s{seed}-{target}", [
                    "tickets", "transfer", "--model", MODEL, *w, "--task", target, *shared, "--seed", str(seed),
                    *common])
                for level in s["levels"]:
                    ticket = f"{finds[(kind, seed)]}/level-{level:02d}/ticket.safetensors"
                    run_step(state, f"transfer-{kind}-s{seed}-{target}-L{level}", [
                        "tickets", "transfer", "--ticket", ticket, *w, "--task", target, *shared, "--seed",
                        str(seed), *common])
    print("all steps done", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------------
def read_steps(state: Path) -> dict[str, dict]:
    return _steps.read_steps(state / "steps.jsonl")


def _metrics(run: str, level: int = 0) -> dict:
    return json.loads((Path(run) / f"level-{level:02d}" / "metrics.json").read_text())


def _stat(values: list[float]) -> str:
    if not values:
        return "–"
    m = statistics.mean(values) * 100
    sd = statistics.stdev(values) * 100 if len(values) > 1 else 0.0
    return f"{m:.2f} ± {sd:.2f}"


def report(s: dict) -> str:
    from tickets.fileio import atomic_write_text, write_rows
    from tickets.study.matching import highest_matching_table

    steps = read_steps(s["state"])
    missing = [n for n in ("pretrain-simclr", "pretrain-robust") if n not in steps]
    if missing:
        raise SystemExit(f"steps {', '.join(missing)} have not finished: run the study first")
    lines = ["# Upstream study: SimCLR, supervised and robust pre-training of ResNet-20, and their tickets", ""]
    # SimCLR pre-training, per epoch
    sim = _metrics(steps["pretrain-simclr"]["run"])
    lines += ["## SimCLR pre-training (from scratch, CIFAR-10 training set)", "",
              "| epoch | train loss (NT-Xent) | val NT-Xent | val kNN accuracy |", "|---:|---:|---:|---:|"]
    for h in sim["history"]:
        lines.append(f"| {h['epoch'] + 1} | {h['train_loss']:.4f} | {h['val']['ssl_loss']:.4f} | "
                     f"{h['val'].get('knn_accuracy', float('nan')):.2%} |")
    lines += ["", f"Selected epoch {sim['best_epoch'] + 1}; test (first {sim['test']['examples']} images): "
              f"NT-Xent {sim['test']['ssl_loss']:.4f}, kNN {sim['test'].get('knn_accuracy', float('nan')):.2%} "
              f"(bank: the run's training split). "
              f"{steps['pretrain-simclr']['cpu_s'] / 60:.1f} CPU-min.", ""]
    rob = _metrics(steps["pretrain-robust"]["run"])
    r = rob.get("robust", {})
    lines += ["## Robust pre-training (PGD-3, ε 2/255, from the supervised ResNet-20)", "",
              f"Clean test accuracy {rob['test']['accuracy']:.2%}; robust accuracy {r.get('robust_accuracy', 0):.2%} "
              f"(PGD-20, ε 2/255, {r.get('examples', '?')} images, clean {r.get('clean_accuracy', 0):.2%}). "
              f"{steps['pretrain-robust']['cpu_s'] / 60:.1f} CPU-min.", ""]
    # probes
    lines += ["## Probes of the three θ0 on CIFAR-10 (frozen features; bank / probe training set: the training set)",
              "", "| θ0 | kNN (k 200, T 0.07) | linear probe |", "|---|---:|---:|"]
    probe_rows = []
    for kind in KINDS:
        vals = {p: (steps.get(f"probe-{p}-{kind}", {}).get("json") or {}).get(f"{p}_accuracy") for p in
                ("knn", "linear")}
        probe_rows.append({"theta0": kind, **vals})
        lines.append(f"| {kind} | " + " | ".join("–" if v is None else f"{v:.2%}" for v in vals.values()) + " |")
    lines.append("")
    # tickets on the source objectives
    lines += ["## IMP tickets on the source objectives (test, mean over seeds)", "",
              "| kind | level | sparsity | metric | value |", "|---|---:|---:|---|---:|"]
    for kind in KINDS:
        for level in (0, *s["levels"]):
            ms = [_metrics(steps[f"find-{kind}-s{seed}"]["run"], level) for seed in s["seeds"]
                  if f"find-{kind}-s{seed}" in steps]
            if not ms:
                continue
            shown = [ms[0]["primary_metric"]] + (["knn_accuracy"] if "knn_accuracy" in ms[0]["test"] else [])
            for key in shown:
                v = statistics.mean(m["test"][key] for m in ms)
                value = f"{v:.4f}" if key.endswith("loss") else f"{v:.2%}"
                lines.append(f"| {kind} | {level} | {ms[0]['sparsity']:.1%} | {key} | {value} |")
    lines.append("")
    # transfers
    rows = []
    for kind in KINDS:
        for seed in s["seeds"]:
            for target in TARGETS:
                d = steps.get(f"dense-{kind}-s{seed}-{target}")
                if d:
                    m = _metrics(d["run"])
                    rows.append({"model": kind, "kind": "dense", "source": None, "method": None, "target": target,
                                 "fraction": 1.0, "level": 0, "sparsity": 0.0, "seed": seed,
                                 "score": m["test"]["accuracy"], "metric": "accuracy"})
                for level in s["levels"]:
                    t = steps.get(f"transfer-{kind}-s{seed}-{target}-L{level}")
                    if t:
                        m = _metrics(t["run"])
                        rows.append({"model": kind, "kind": "transfer", "source": kind, "method": "imp",
                                     "target": target, "fraction": 1.0, "level": level, "sparsity": m["sparsity"],
                                     "seed": seed, "score": m["test"]["accuracy"], "metric": "accuracy"})
    lines += ["## Transfer (test accuracy %, mean ± std over seeds; * matching its own dense θ0 within 1 std)", "",
              "| target | level | sparsity | " + " | ".join(f"{k} dense | {k} ticket" for k in KINDS) + " |",
              "|---|---:|---:|" + "---:|" * (2 * len(KINDS))]
    table = {(r["model"], r["target"], r["level"]): [] for r in rows}
    for r in rows:
        table[(r["model"], r["target"], r["level"])].append(r)
    from tickets.study.matching import Stat, is_matching

    for target in TARGETS:
        for level in s["levels"]:
            cells, sparsity = [], None
            for kind in KINDS:
                dense = [r["score"] for r in table.get((kind, target, 0), [])]
                tick = table.get((kind, target, level), [])
                sparsity = sparsity if sparsity is not None else (tick[0]["sparsity"] if tick else None)
                mark = ""
                if dense and tick:
                    mark = " *" if is_matching(statistics.mean(r["score"] for r in tick),
                                               Stat.of(dense, list(range(len(dense))))) else ""
                cells += [_stat(dense), _stat([r["score"] for r in tick]) + mark]
            sp = "–" if sparsity is None else f"{sparsity:.1%}"
            lines.append(f"| {target} | {level} | {sp} | " + " | ".join(cells) + " |")
    lines.append("")
    matching = highest_matching_table(rows)
    lines += ["## Highest matching sparsity per pre-training (vs the dense model of the same θ0)", "",
              "| θ0 / tickets | target | within 1 std | at least dense |", "|---|---|---:|---:|"]
    for rec in matching:
        def show(x):
            return "none" if x is None else f"{x['sparsity']:.1%}"

        lines.append(f"| {LABELS[rec['model']]} | {rec['target']} | {show(rec['within_1sd'])} | "
                     f"{show(rec['at_least_dense'])} |")
    cpu = sum(r["cpu_s"] for r in steps.values())
    lines += ["", f"CPU time of all steps: {cpu / 3600:.2f} h ({len(steps)} steps; steps.jsonl).", ""]
    text = "\n".join(lines)
    results = s["results"] or s["state"]
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results / "report.md", text)
    write_rows(rows, results / "transfer")
    write_rows(matching, results / "highest_matching")
    write_rows(probe_rows, results / "probes")
    write_rows([{"epoch": h["epoch"] + 1, "train_loss": h["train_loss"], **{f"val_{k}": v for k, v in
                 h["val"].items()}} for h in sim["history"]], results / "simclr_epochs")
    write_rows([{"step": k, "cpu_s": v["cpu_s"], "wall_s": v["wall_s"]} for k, v in sorted(steps.items())],
               results / "costs")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--report", action="store_true", help="only write the tables from finished runs")
    p.add_argument("--smoke", action="store_true", help="every command with a few steps, into runs/upstream-smoke")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    s = settings(args.smoke)
    if not args.report:
        run_study(s)
    print(report(s))


if __name__ == "__main__":
    main()
