"""When is a sparse subnetwork "matching"? Aggregation over seeds, the two matching criteria, the highest matching
sparsity, and the transfer matrix — plain functions over plain rows, so they can be tested on hand-made numbers.

A *row* is one score of one run at one sparsity (what ``report.collect_rows`` reads from run directories)::

    {"model", "kind": "find" | "transfer" | "dense", "source", "method", "target", "fraction", "level",
     "sparsity", "seed", "score", "metric"}

``kind == "dense"`` rows are the dense baselines (no mask; ``source`` / ``method`` None, ``level`` 0).
``level`` is the schedule position (1 = the first sparsity of the schedule) whatever the method numbers its run
levels, so tickets drawn by different methods line up.

Definitions (stated in every report):

* mean and standard deviation are over seeds; the standard deviation is the sample one (ddof = 1), 0 for one seed;
* **matching** (within one standard deviation): ``mean >= dense_mean - dense_std`` (``<=`` ... ``+`` when lower is
  better), the dense model's mean and std taken over the same seeds' dense runs;
* **at least dense** (the stricter criterion): ``mean >= dense_mean``;
* the **highest matching sparsity** of a ticket kind is the largest sparsity at which it is matching (a kind that
  matches at 80% but not at 64% still reports 80%; the curve shows the rest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from tickets.tasks.base import higher_is_better  # noqa: F401  (the metric direction, re-exported)


@dataclass
class Stat:
    """Mean and sample standard deviation over seeds."""

    mean: float
    std: float
    n: int
    seeds: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, values: Sequence[float], seeds: Sequence[int] = ()) -> "Stat":
        if not values:
            raise ValueError("no values to aggregate")
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        return cls(mean, std, n, sorted(seeds))

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n, "seeds": self.seeds}


def is_matching(mean: float, dense: Stat, higher: bool = True) -> bool:
    """Within one standard deviation of the dense mean, or better."""
    return mean >= dense.mean - dense.std if higher else mean <= dense.mean + dense.std


def at_least_dense(mean: float, dense: Stat, higher: bool = True) -> bool:
    """At least the dense mean (the stricter criterion)."""
    return mean >= dense.mean if higher else mean <= dense.mean


def highest_matching(points: Iterable[tuple[float, float]], dense: Stat, *, strict: bool = False,
                     higher: bool = True) -> float | None:
    """The largest sparsity among ``(sparsity, mean score)`` points that is matching (``strict``: at least dense),
    or None when no point is."""
    test = at_least_dense if strict else is_matching
    ok = [s for s, m in points if test(m, dense, higher)]
    return max(ok) if ok else None


# ----------------------------------------------------------------------------------------------------------------
# aggregation of rows
# ----------------------------------------------------------------------------------------------------------------
def dense_baselines(rows: list[dict], *, adversarial: bool = False) -> dict[tuple, Stat]:
    """(model, target, fraction) → Stat of the dense runs' scores over seeds: the standard fine-tunes (kind
    "dense"), or with ``adversarial`` the adversarially fine-tuned ones (kind "dense-adversarial")."""
    kind = "dense-adversarial" if adversarial else "dense"
    groups: dict[tuple, dict[int, float]] = {}
    for r in rows:
        if r["kind"] == kind:
            groups.setdefault((r["model"], r["target"], r["fraction"]), {})[r["seed"]] = r["score"]
    return {k: Stat.of(list(v.values()), list(v)) for k, v in groups.items()}


def is_adversarial_fine_tune(method: Any) -> bool:
    """Whether a ticket kind's label says its fine-tunes were adversarial ("imp adv-ft", ``labels.kind_label``)."""
    return "adv-ft" in str(method or "").split()


def baseline_for(method: Any, key: tuple, dense: dict[tuple, Stat], adversarial_dense: dict[tuple, Stat]
                 ) -> Stat | None:
    """The dense baseline a ticket curve ``(model, target, fraction)`` = ``key`` is judged against: the dense model
    fine-tuned the same way — adversarially fine-tuned tickets ("adv-ft") against the adversarially fine-tuned dense
    runs, never the standard ones (double-win, Chen et al. ICML'22, compares like with like). None when the study
    has no such dense run (no verdict, not "not matching")."""
    return (adversarial_dense if is_adversarial_fine_tune(method) else dense).get(key)


def ticket_curves(rows: list[dict]) -> dict[tuple, list[dict]]:
    """(model, target, fraction, source, method) → points sorted by level, each
    ``{"level", "sparsity", "score": Stat, "sparsity_std"}`` aggregated over seeds.

    When a find row and a transfer row describe the same cell (a ticket re-trained on its own task), the transfer
    row wins: it carries the settings of the transfer block."""
    cells: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        if r["kind"] == "dense" or not r["level"]:
            continue
        key = (r["model"], r["target"], r["fraction"], r["source"], r["method"], r["level"])
        seeds = cells.setdefault(key, {})
        if r["seed"] not in seeds or r["kind"] == "transfer":
            seeds[r["seed"]] = r
    curves: dict[tuple, list[dict]] = {}
    for key, by_seed in cells.items():
        rs = list(by_seed.values())
        curves.setdefault(key[:5], []).append({
            "level": key[5],
            "sparsity": sum(r["sparsity"] for r in rs) / len(rs),
            "score": Stat.of([r["score"] for r in rs], [r["seed"] for r in rs]),
            "metric": rs[0]["metric"],
        })
    for pts in curves.values():
        pts.sort(key=lambda p: p["level"])
    return curves


def highest_matching_table(rows: list[dict]) -> list[dict]:
    """One record per model × target × fraction × ticket kind (source, method): the highest matching sparsities
    under both criteria, and the scores there."""
    dense, adv = dense_baselines(rows), dense_baselines(rows, adversarial=True)
    out = []
    for (model, target, fraction, source, method), pts in sorted(ticket_curves(rows).items(), key=_sort_key):
        d = baseline_for(method, (model, target, fraction), dense, adv)
        metric = pts[0]["metric"]
        higher = higher_is_better(metric)
        rec = {"model": model, "target": target, "fraction": fraction, "source": source, "method": method,
               "metric": metric, "dense": d.to_dict() if d else None, "levels": len(pts),
               "max_sparsity": max(p["sparsity"] for p in pts)}
        for name, strict in (("within_1sd", False), ("at_least_dense", True)):
            s = highest_matching([(p["sparsity"], p["score"].mean) for p in pts], d, strict=strict,
                                 higher=higher) if d else None
            p = next((p for p in pts if p["sparsity"] == s), None)
            rec[name] = None if s is None else {"sparsity": s, "score": p["score"].to_dict()}
        out.append(rec)
    return out


def _sort_key(item):
    (model, target, fraction, source, method), _ = item
    return (model, target, -fraction, source != target, str(source), str(method))


def transfer_matrices(rows: list[dict]) -> list[dict]:
    """The transfer matrix per model × method × fraction × level: ``cells[source][target]`` = mean score over seeds
    of that source task's ticket fine-tuned on that target (the diagonal: tickets drawn on the target itself),
    with the target's dense baseline, the difference to it and both matching flags."""
    dense, adv = dense_baselines(rows), dense_baselines(rows, adversarial=True)
    curves = ticket_curves(rows)
    groups: dict[tuple, dict] = {}
    for (model, target, fraction, source, method), pts in curves.items():
        d = baseline_for(method, (model, target, fraction), dense, adv)
        for p in pts:
            g = groups.setdefault((model, method, fraction, p["level"]), {"sparsity": [], "cells": {}})
            g["sparsity"].append(p["sparsity"])
            higher = higher_is_better(p["metric"])
            g["cells"].setdefault(source, {})[target] = {
                "score": p["score"].mean, "std": p["score"].std, "n": p["score"].n, "seeds": p["score"].seeds,
                "metric": p["metric"], "sparsity": p["sparsity"],
                "dense": None if d is None else d.mean, "dense_std": None if d is None else d.std,
                "delta": None if d is None else p["score"].mean - d.mean,
                "matching": None if d is None else is_matching(p["score"].mean, d, higher),
                "at_least_dense": None if d is None else at_least_dense(p["score"].mean, d, higher),
            }
    out = []
    # str(): a ticket read from another tool's file may have no source or method (None)
    for (model, method, fraction, level), g in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]),
                                                                                         -kv[0][2], kv[0][3])):
        sources = sorted(g["cells"], key=str)
        targets = sorted({t for cells in g["cells"].values() for t in cells})
        # sources that are also targets first, in target order, so the diagonal is a diagonal
        sources = [t for t in targets if t in g["cells"]] + [s for s in sources if s not in targets]
        out.append({"model": model, "method": method, "fraction": fraction, "level": level,
                    "sparsity": sum(g["sparsity"]) / len(g["sparsity"]), "sources": sources, "targets": targets,
                    "cells": g["cells"]})
    return out


def transfer_vs_own(rows: list[dict]) -> list[dict]:
    """For every target and every foreign source: the transferred tickets' mean score minus the target's own
    tickets' (same method, level, fraction), per level — "did the pre-training-task tickets transfer better?"."""
    curves = ticket_curves(rows)
    out = []
    for (model, target, fraction, source, method), pts in sorted(curves.items(), key=_sort_key):
        if source == target:
            continue
        own = {p["level"]: p for p in curves.get((model, target, fraction, target, method), [])}
        diffs = []
        for p in pts:
            if p["level"] in own:
                o = own[p["level"]]
                sign = 1 if higher_is_better(p["metric"]) else -1
                diffs.append({"level": p["level"], "sparsity": p["sparsity"], "transferred": p["score"].mean,
                              "own": o["score"].mean, "diff": sign * (p["score"].mean - o["score"].mean),
                              "transferred_std": p["score"].std, "own_std": o["score"].std})
        if diffs:
            out.append({"model": model, "target": target, "fraction": fraction, "source": source, "method": method,
                        "levels": diffs, "wins": sum(d["diff"] > 0 for d in diffs),
                        "mean_diff": sum(d["diff"] for d in diffs) / len(diffs)})
    return out
