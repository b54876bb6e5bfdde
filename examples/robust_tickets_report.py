"""The report of the robust-tickets study (``python examples/robust-tickets.py --report``).

What is particular to that study lives here, on top of the generic analysis of ``tickets.study.robust``: which find
runs hold its tickets (``find_config`` rebuilds the study's ``tickets find`` settings as a ``FindConfig`` and
``find_run_path`` resolves its run directory through the Python API, as ``find_tickets`` does), which transfer
runs count (``SHARED_SETUP``), and what each step cost (``read_steps`` on the study's ``steps.jsonl``).
``robust_transfer_report`` writes the tables, plot and costs of docs/results/robust-tickets/.

Import it from this folder (``examples/`` on ``sys.path``, as when running ``examples/robust-tickets.py``) or load
it by path with ``importlib``.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared step runner beside this file
import _steps  # noqa: E402
from typing import Any

from tickets.config import FindConfig, from_dict, merge
from tickets.errors import TicketsError
from tickets.fileio import atomic_write_text, flatten, read_json, write_rows
from tickets.study.robust import (
    adversarial_label,
    collect_transfers,
    compare_tickets,
    double_win,
    format_compare,
    format_double_win,
    format_stat,
    has_setup,
    mean_std,
    plot_compare,
    ticket_checksums,
)
from tickets.verbs.find import run_path

# The study's `tickets find` settings: FIND (+ ROBUST for the robust tickets) in examples/robust-tickets.py, as a
# config. tests/test_robust.py checks that the two agree.
FIND_SETTINGS: dict[str, Any] = {
    "model": "resnet20-cifar10", "task": "cifar10", "method": "imp", "schedule": {"levels": 4, "rate": 0.4},
    "train": {"epochs": 3}, "data": {"train_size": 2000, "limit": 2000},
}
ROBUST_SETTINGS: dict[str, Any] = {
    "train": {"adversarial": {"attack": "pgd", "eps": 2, "alpha": 1, "steps": 3}},
    "robust_eval": {"attack": "pgd", "eps": 2, "alpha": 0.5, "steps": 20, "limit": 500},
}
KINDS = ("standard", "robust")

# The transfer runs that count: the shared CV settings, standard fine-tuning, no robust evaluation.
SHARED_SETUP = {"data": {"train_size": 2000, "limit": 2000}, "train": {"epochs": 3, "adversarial": None},
                "head": "fresh", "init": "ticket", "reverse": False, "robust_eval": None}


def find_config(kind: str, seed: int) -> FindConfig:
    """The config of the study's step ``find-<kind>-s<seed>``: ``kind`` "standard" (the shared CV settings) or
    "robust" (the same under PGD-3 adversarial training, with PGD-20 robust evaluation). TicketsError for another
    kind."""
    if kind not in KINDS:
        raise TicketsError(f"unknown ticket kind {kind!r} in the robust-tickets study: use one of {', '.join(KINDS)}")
    settings = merge(FIND_SETTINGS, ROBUST_SETTINGS) if kind == "robust" else FIND_SETTINGS
    return from_dict(FindConfig, {**settings, "seed": seed}, f"robust-tickets find-{kind}-s{seed}")


def find_run_path(cfg: FindConfig, out: str | Path, *, data_root: str | Path | None = None,
                  model_root: str | Path | None = None) -> Path:
    """``out/find-<hash>``: the run directory ``find_tickets(cfg, out=out)`` writes to, without running it
    (``tickets.verbs.find.run_path``: registry facts only, no model or data loaded; the roots are not needed)."""
    return run_path(cfg, out)


def read_steps(steps_log: str | Path) -> dict[str, dict]:
    """Last successful record per step name of the study's steps.jsonl (``_steps.read_steps``)."""
    return _steps.read_steps(steps_log)


def _finds_from_steps(steps: dict[str, dict], out: str | Path) -> dict[str, list[Path]]:
    """kind → the find runs of the ``find-<kind>-s<seed>`` steps that finished, in seed order."""
    finds: dict[str, list[Path]] = defaultdict(list)
    for name in sorted(steps):
        m = re.fullmatch(r"find-(\w+)-s(\d+)", name)
        if m:
            finds[m.group(1)].append(find_run_path(find_config(m.group(1), int(m.group(2))), out))
    return dict(finds)


def _write_rows(rows: list[dict], stem: Path) -> None:
    write_rows([flatten(r) for r in rows], stem)  # (mean, std, n) → *_mean/_std/_n keys, in JSON as in CSV


def robust_transfer_report(out: str | Path, results: str | Path, steps_log: str | Path,
                           finds: dict[str, list[Path]] | None = None, rule: str = "std",
                           setup: dict | None = SHARED_SETUP) -> str:
    """Issue 4 §5: standard vs robust IMP tickets transferred with standard fine-tuning, from ``out``.

    ``finds[kind]`` are the find runs of each ticket kind ("standard", "robust"); by default they are worked out
    from the ``find-<kind>-s<seed>`` steps in ``steps_log`` (``find_config`` + ``find_run_path``). Only transfer
    runs agreeing with ``setup`` count (default: the shared CV settings, standard fine-tuning). Writes into
    ``results``: transfer.md/.csv/.json, double-win.md/.csv/.json (when runs with robust evaluation exist),
    source.csv/.json (the tickets on the source task), costs.json and robust-tickets.png; returns the markdown.
    TicketsError when no find run is known.
    """
    results = Path(results)
    steps = read_steps(steps_log)
    if finds is None:
        finds = _finds_from_steps(steps, out)
    finds = dict(sorted(finds.items(), key=lambda kv: kv[0] != "standard"))  # standard first: diff = other − standard
    kinds = list(finds)
    if not kinds:
        raise TicketsError(f"no find runs named in {steps_log}: run examples/robust-tickets.py first")
    records = collect_transfers(out)
    rows = compare_tickets(records, finds, rule=rule, setup=setup)
    table = format_compare(rows, kinds, rule)
    atomic_write_text(results / "transfer.md", table)
    _write_rows(rows, results / "transfer")

    # double-win: the runs with robust evaluation whose tickets come from these finds (and their dense runs)
    ours = {c for d in (x for dirs in finds.values() for x in dirs) for c in ticket_checksums(d)}
    dw_setup = {k: v for k, v in (setup or {}).items() if k not in ("robust_eval", "train")}
    dw_records = [r for r in records if r["ra"] is not None and has_setup(r["config"], dw_setup)
                  and (r["ticket"] is None or r["ticket"]["checksum"] in ours)]
    dw_text = ""
    if dw_records:
        dw_rows = double_win(dw_records, rule)
        dw_text = format_double_win(dw_rows, rule)
        atomic_write_text(results / "double-win.md", dw_text)
        _write_rows(dw_rows, results / "double-win")

    # the tickets on the source task: clean test accuracy per level, robust accuracy where measured
    src_rows = []
    for kind, dirs in finds.items():
        for d in dirs:
            summary = read_json(Path(d) / "summary.json")
            for lv in summary["levels"]:
                m = read_json(Path(d) / f"level-{lv['level']:02d}" / "metrics.json")
                rob = m.get("robust") or {}
                src_rows.append({"kind": kind, "seed": summary["config"]["seed"], "level": lv["level"],
                                 "sparsity": lv["sparsity"], "test_accuracy": lv["test"][lv["primary_metric"]],
                                 "robust_accuracy": rob.get("robust_accuracy"),
                                 "robust_clean_accuracy": rob.get("clean_accuracy"),
                                 "robust_attack": adversarial_label(rob) if rob else None,
                                 "robust_examples": rob.get("examples"),
                                 "train_seconds": m["train_seconds"], "run": Path(d).name})
    _write_rows(src_rows, results / "source")
    source_lines = ["| kind | level | sparsity | source test acc. | robust acc. (attack, eps in /255; examples) |",
                    "|---|---:|---:|---:|---:|"]
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in src_rows:
        by[(r["kind"], r["level"])].append(r)
    for (kind, level), rs in sorted(by.items()):
        acc = mean_std([r["test_accuracy"] for r in rs])
        ras = [r["robust_accuracy"] for r in rs if r["robust_accuracy"] is not None]
        attack = next((f" ({r['robust_attack']}; {r['robust_examples']})" for r in rs if r["robust_attack"]), "")
        source_lines.append(f"| {kind} | {level} | {100 * rs[0]['sparsity']:.1f}% | {format_stat(acc + (len(rs),))} | "
                            + (format_stat(mean_std(ras) + (len(ras),)) + attack if ras else "not measured") + " |")

    # what drawing each kind of ticket cost
    costs: dict[str, Any] = {"steps": {k: {"cpu_s": v["cpu_s"], "wall_s": v["wall_s"]} for k, v in steps.items()}}
    for kind, dirs in finds.items():
        cpu = [steps[n]["cpu_s"] for n in steps if n.startswith(f"find-{kind}-")]
        train = [sum(r["train_seconds"] for r in src_rows if r["kind"] == kind and r["run"] == Path(d).name)
                 for d in dirs]
        # a find whose CPU is far below its own recorded training time was done by another process and only
        # reused here (same content hash): its CPU seconds say nothing about its cost
        reused = bool(cpu) and statistics.fmean(cpu) < 0.25 * statistics.fmean(train or [0.0])
        costs[kind] = {"find_cpu_s_mean": None if reused or not cpu else statistics.fmean(cpu),
                       "find_train_seconds_mean": statistics.fmean(train) if train else None,
                       **({"note": "computed by another study and reused by content hash"} if reused else {})}
    if "standard" in costs and "robust" in costs:
        s, r = costs["standard"], costs["robust"]
        costs["robust_over_standard"] = {
            k: (r[k] / s[k] if r[k] and s[k] else None) for k in ("find_cpu_s_mean", "find_train_seconds_mean")}
    timed = {n[len("cost-find-"):]: steps[n]["cpu_s"] for n in steps if n.startswith("cost-find-")}
    if "standard" in timed:  # the controlled measurement: same data and levels, one after the other
        costs["drawing_cpu_s"] = timed
        costs["drawing_over_standard"] = {k: round(v / timed["standard"], 2) for k, v in timed.items()}
    costs["total_cpu_s"] = round(sum(v["cpu_s"] for v in steps.values()), 1)
    atomic_write_text(results / "costs.json", json.dumps(costs, indent=2) + "\n")
    if rows:
        seeds = max((r[k][2] for r in rows for k in kinds), default=0)
        plot_compare(rows, kinds, results / "robust-tickets.png",
                     title="resnet20-cifar10: IMP tickets drawn on CIFAR-10 with standard vs adversarial training, "
                           f"then standard fine-tuning on the target (mean ± std over {seeds} seeds)")
    return "\n".join(["## Transfer (standard fine-tuning)", "", table, "## Double-win", "", dw_text or "(no runs)", "",
                      "## The tickets on the source task", "",
                      *source_lines, "", "## Cost", "", "```json", json.dumps(
                          {k: v for k, v in costs.items() if k != "steps"}, indent=2), "```", ""])
